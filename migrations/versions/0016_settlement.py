"""Nightly settlement: a run per clearing date, the outcome of each step, the day's lines per
merchant and transaction class, and each merchant's batch.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "settlement_batches",
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("merchant_no", sa.String(length=15), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("gross", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("net", sa.BigInteger(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("due", "carried", "posted", name="batchstatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("ledger_transaction_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("gross = net + fee", name=op.f("ck_settlement_batches_balanced")),
        sa.PrimaryKeyConstraint("clearing_date", "merchant_no", name=op.f("pk_settlement_batches")),
    )
    op.create_table(
        "settlement_lines",
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("merchant_no", sa.String(length=15), nullable=False),
        sa.Column("tx_class", sa.String(length=32), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("gross", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "clearing_date", "merchant_no", "tx_class", name=op.f("pk_settlement_lines")
        ),
    )
    op.create_table(
        "settlement_runs",
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("running", "failed", "settled", name="runstatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column(
            "last_step",
            sa.Enum(
                "close",
                "reexamine",
                "clear",
                "fees",
                "batches",
                "postings",
                "files",
                "report",
                name="step",
                native_enum=False,
                length=16,
            ),
            nullable=True,
        ),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("clearing_date", name=op.f("pk_settlement_runs")),
    )
    op.create_table(
        "settlement_steps",
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column(
            "step",
            sa.Enum(
                "close",
                "reexamine",
                "clear",
                "fees",
                "batches",
                "postings",
                "files",
                "report",
                name="step",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("clearing_date", "step", name=op.f("pk_settlement_steps")),
    )


def downgrade() -> None:
    op.drop_table("settlement_steps")
    op.drop_table("settlement_runs")
    op.drop_table("settlement_lines")
    op.drop_table("settlement_batches")
