"""Merchants' settlement cycles and bank details, the payouts of each day, and the payout that
paid each settlement batch.

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "settlement_payees",
        sa.Column("merchant_no", sa.String(length=15), nullable=False),
        sa.Column(
            "cycle",
            sa.Enum("daily", "weekly", "monthly", name="cycle", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("cycle_day", sa.Integer(), nullable=True),
        sa.Column("bank_name", sa.String(length=60), nullable=True),
        sa.Column("bank_branch", sa.String(length=60), nullable=True),
        sa.Column("account_no", sa.String(length=34), nullable=True),
        sa.Column("account_holder", sa.String(length=100), nullable=True),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(cycle = 'daily' AND cycle_day IS NULL)"
            " OR (cycle = 'weekly' AND cycle_day BETWEEN 1 AND 7)"
            " OR (cycle = 'monthly' AND cycle_day BETWEEN 1 AND 31)",
            name=op.f("ck_settlement_payees_cycle_day"),
        ),
        sa.PrimaryKeyConstraint("merchant_no", name=op.f("pk_settlement_payees")),
    )
    op.create_table(
        "settlement_payouts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("merchant_no", sa.String(length=15), nullable=False),
        sa.Column("reference", sa.String(length=24), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("bank_name", sa.String(length=60), nullable=True),
        sa.Column("bank_branch", sa.String(length=60), nullable=True),
        sa.Column("account_no", sa.String(length=34), nullable=True),
        sa.Column("account_holder", sa.String(length=100), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "held",
                "due",
                "issued",
                "confirmed",
                name="payoutstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("ledger_transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_settlement_payouts_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_payouts")),
        sa.UniqueConstraint(
            "clearing_date", "merchant_no", name="uq_settlement_payouts_day_merchant"
        ),
        sa.UniqueConstraint("reference", name=op.f("uq_settlement_payouts_reference")),
    )
    op.create_index(
        op.f("ix_settlement_payouts_clearing_date"),
        "settlement_payouts",
        ["clearing_date"],
        unique=False,
    )
    op.add_column(
        "settlement_batches", sa.Column("payout_reference", sa.String(length=24), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("settlement_batches", "payout_reference")
    op.drop_index(op.f("ix_settlement_payouts_clearing_date"), table_name="settlement_payouts")
    op.drop_table("settlement_payouts")
    op.drop_table("settlement_payees")
