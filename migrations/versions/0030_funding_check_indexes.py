"""Indexes for the nightly check of the day's funding movements: the counter deposits and
withdrawals and the bank credits of a clearing date, and the row behind each of their postings.

Revision ID: 0030
Revises: 0029
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("account_movements", "clearing_date"),
    ("account_movements", "ledger_transaction_id"),
    ("bank_credits", "clearing_date"),
    ("bank_credits", "ledger_transaction_id"),
    ("bank_credits", "assign_transaction_id"),
)


def upgrade() -> None:
    for table, column in INDEXES:
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def downgrade() -> None:
    for table, column in reversed(INDEXES):
        op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table)
