"""The daily reconciliation with each biller: one row per biller and clearing date, with the
file sent, its totals and the ledger's, the attempts and the biller's answer.

Revision ID: 0029
Revises: 0028
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bill_reconciliations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("biller_code", sa.String(length=16), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "sending",
                "agreed",
                "disagreed",
                "unbalanced",
                name="reconstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("file_name", sa.String(length=64), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("file_text", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("ledger_count", sa.BigInteger(), nullable=False),
        sa.Column("ledger_total", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("disagreements", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bill_reconciliations")),
        sa.UniqueConstraint(
            "clearing_date",
            "biller_code",
            name=op.f("uq_bill_reconciliations_clearing_date_biller_code"),
        ),
    )
    op.create_index(
        "ix_bill_reconciliations_status_next",
        "bill_reconciliations",
        ["status", "next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_bill_reconciliations_status_next", table_name="bill_reconciliations")
    op.drop_table("bill_reconciliations")
