"""Terminal sessions remember the highest sequence number a PIN was checked for, so that a copy of
a request (a replay in flight) never takes a second PIN try.

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("terminal_sessions") as batch:
        batch.add_column(sa.Column("pin_seq", sa.BigInteger(), nullable=False, server_default="0"))
    # The default only filled the existing rows: every new session is written with its value.
    with op.batch_alter_table("terminal_sessions") as batch:
        batch.alter_column("pin_seq", existing_type=sa.BigInteger(), server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("terminal_sessions") as batch:
        batch.drop_column("pin_seq")
