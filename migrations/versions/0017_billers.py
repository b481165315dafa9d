"""Billers: the utilities whose bills residents pay, registered by administrators.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "billers",
        sa.Column("id", ID, nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "category",
            sa.Enum(
                "water",
                "electricity",
                "gas",
                "heating",
                "telephone",
                name="billercategory",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("endpoint", sa.String(length=200), nullable=False),
        sa.Column("key_label", sa.String(length=40), nullable=False),
        sa.Column("bill_key_pattern", sa.String(length=64), nullable=False),
        sa.Column("bank_name", sa.String(length=64), nullable=False),
        sa.Column("bank_account_no", sa.String(length=34), nullable=False),
        sa.Column("bank_account_name", sa.String(length=64), nullable=False),
        sa.Column("fee_fixed", sa.Integer(), nullable=False),
        sa.Column("fee_bps", sa.Integer(), nullable=False),
        sa.Column("fee_max", sa.Integer(), nullable=False),
        sa.Column(
            "settlement_cycle",
            sa.Enum(
                "daily", "weekly", "monthly", name="settlementcycle", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "active", "suspended", "closed", name="billerstatus", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("fee_fixed >= 0", name=op.f("ck_billers_fee_fixed_not_negative")),
        sa.CheckConstraint(
            "fee_bps >= 0 AND fee_bps <= 10000", name=op.f("ck_billers_fee_bps_range")
        ),
        sa.CheckConstraint("fee_max >= 0", name=op.f("ck_billers_fee_max_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billers")),
        sa.UniqueConstraint("code", name=op.f("uq_billers_code")),
    )


def downgrade() -> None:
    op.drop_table("billers")
