"""An index on the payout that paid each settlement batch: a day's payouts find the batches not
paid yet, and the day's check the batches each payout paid, without reading every day's batches.

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_settlement_batches_payout_reference"),
        "settlement_batches",
        ["payout_reference"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_settlement_batches_payout_reference"), table_name="settlement_batches")
