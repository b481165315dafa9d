"""Billers settle in the nightly run: one batch per biller and day, and payouts of either kind
of payee (a merchant or a biller) in the one payouts table.

Revision ID: 0026
Revises: 0025
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_STATUS = sa.Enum("due", "carried", "posted", name="batchstatus", native_enum=False, length=16)
PAYEE_KIND = sa.Enum("merchant", "biller", name="payeekind", native_enum=False, length=16)


def upgrade() -> None:
    op.create_table(
        "biller_batches",
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("biller_code", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("payments", sa.BigInteger(), nullable=False),
        sa.Column("gross", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("net", sa.BigInteger(), nullable=False),
        sa.Column("status", BATCH_STATUS, nullable=False),
        sa.Column("settled_on", sa.Date(), nullable=True),
        sa.Column("ledger_transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("payout_reference", sa.String(length=32), nullable=True),
        sa.CheckConstraint("gross = net + fee", name=op.f("ck_biller_batches_balanced")),
        sa.PrimaryKeyConstraint("clearing_date", "biller_code", name=op.f("pk_biller_batches")),
    )
    op.create_index(
        op.f("ix_biller_batches_payout_reference"),
        "biller_batches",
        ["payout_reference"],
        unique=False,
    )
    with op.batch_alter_table("settlement_payouts") as batch:
        batch.add_column(
            sa.Column("payee_kind", PAYEE_KIND, nullable=False, server_default="merchant")
        )
        batch.alter_column(
            "merchant_no", existing_type=sa.String(length=15), type_=sa.String(length=16)
        )
        batch.alter_column(
            "reference", existing_type=sa.String(length=24), type_=sa.String(length=32)
        )
        batch.drop_constraint("uq_settlement_payouts_day_merchant", type_="unique")
        batch.create_unique_constraint(
            "uq_settlement_payouts_day_payee", ["clearing_date", "payee_kind", "merchant_no"]
        )
    # The default only filled the existing rows (all merchants'): every new payout names its kind.
    with op.batch_alter_table("settlement_payouts") as batch:
        batch.alter_column("payee_kind", existing_type=PAYEE_KIND, server_default=None)


def downgrade() -> None:
    op.execute("DELETE FROM settlement_payouts WHERE payee_kind = 'biller'")
    with op.batch_alter_table("settlement_payouts") as batch:
        batch.drop_constraint("uq_settlement_payouts_day_payee", type_="unique")
        batch.create_unique_constraint(
            "uq_settlement_payouts_day_merchant", ["clearing_date", "merchant_no"]
        )
        batch.alter_column(
            "reference", existing_type=sa.String(length=32), type_=sa.String(length=24)
        )
        batch.alter_column(
            "merchant_no", existing_type=sa.String(length=16), type_=sa.String(length=15)
        )
        batch.drop_column("payee_kind")
    op.drop_index(op.f("ix_biller_batches_payout_reference"), table_name="biller_batches")
    op.drop_table("biller_batches")
