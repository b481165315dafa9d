"""Counter cash of a bill payment that did not pay and was not handed back ages into a break:
the moment it did, so that each payment opens its break once.

Revision ID: 0031
Revises: 0030
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bill_payments") as batch_op:
        batch_op.add_column(sa.Column("cash_aged_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bill_payments") as batch_op:
        batch_op.drop_column("cash_aged_at")
