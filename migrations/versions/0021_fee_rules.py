"""Effective-dated fee rules (per merchant, category or every merchant; per class or every
class) with their amount tiers, and the rule each settlement line was charged by.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fee_rules",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("merchant_no", sa.String(length=15), nullable=True),
        sa.Column(
            "category",
            sa.Enum(
                "bus",
                "taxi",
                "parking",
                "fuel",
                "retail",
                "utility",
                name="merchantcategory",
                native_enum=False,
                length=16,
            ),
            nullable=True,
        ),
        sa.Column("tx_class", sa.String(length=32), nullable=True),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("effective_to", sa.Date(), nullable=True),
        sa.Column("per_record", sa.BigInteger(), nullable=False),
        sa.Column("rate", sa.Integer(), nullable=False),
        sa.Column("daily", sa.BigInteger(), nullable=False),
        sa.Column("min_fee", sa.BigInteger(), nullable=True),
        sa.Column("max_fee", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_by", sa.String(length=64), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "effective_to IS NULL OR effective_to >= effective_from",
            name=op.f("ck_fee_rules_dates_ordered"),
        ),
        sa.CheckConstraint(
            "merchant_no IS NULL OR category IS NULL", name=op.f("ck_fee_rules_one_scope")
        ),
        sa.CheckConstraint(
            "min_fee IS NULL OR max_fee IS NULL OR min_fee <= max_fee",
            name=op.f("ck_fee_rules_min_le_max"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fee_rules")),
    )
    op.create_index(op.f("ix_fee_rules_merchant_no"), "fee_rules", ["merchant_no"], unique=False)
    op.create_table(
        "fee_rule_tiers",
        sa.Column("rule_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("amount_from", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("amount_to", sa.BigInteger(), nullable=True),
        sa.Column("rate", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["fee_rules.id"], name=op.f("fk_fee_rule_tiers_rule_id_fee_rules")
        ),
        sa.PrimaryKeyConstraint("rule_id", "amount_from", name=op.f("pk_fee_rule_tiers")),
    )
    op.add_column("settlement_lines", sa.Column("fee_rule_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("settlement_lines", "fee_rule_id")
    op.drop_table("fee_rule_tiers")
    op.drop_index(op.f("ix_fee_rules_merchant_no"), table_name="fee_rules")
    op.drop_table("fee_rules")
