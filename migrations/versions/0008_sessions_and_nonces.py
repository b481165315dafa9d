"""Staff session versions (a lock, a disable or a role change ends every live token) and durable
sign-in nonces (a captured sign-in is refused whether or not the cache still remembers it).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("staff_users") as batch:
        batch.add_column(
            sa.Column("session_version", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("staff_users") as batch:
        batch.alter_column("session_version", server_default=None)
    op.create_table(
        "terminal_sign_in_nonces",
        sa.Column(
            "terminal_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("nonce", sa.String(16), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name="fk_terminal_sign_in_nonces_terminal_id_terminals",
        ),
        sa.PrimaryKeyConstraint("terminal_id", "nonce", name="pk_terminal_sign_in_nonces"),
    )
    op.create_index("ix_terminal_sign_in_nonces_used_at", "terminal_sign_in_nonces", ["used_at"])


def downgrade() -> None:
    op.drop_index("ix_terminal_sign_in_nonces_used_at", table_name="terminal_sign_in_nonces")
    op.drop_table("terminal_sign_in_nonces")
    with op.batch_alter_table("staff_users") as batch:
        batch.drop_column("session_version")
