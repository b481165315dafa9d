"""Proposals that resolve a break item: one finance user proposes, a second approves, and only the
approval moves money.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "break_proposals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("break_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "action",
            sa.Enum(
                "write_off",
                "adjust_merchant",
                "refund_card",
                "refund_resident",
                "reexamine",
                name="action",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("target", sa.String(length=32), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "proposed",
                "approved",
                "rejected",
                name="proposalstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("proposed_by_id", sa.BigInteger(), nullable=False),
        sa.Column("proposed_by", sa.String(length=64), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by_id", sa.BigInteger(), nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ledger_transaction_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_break_proposals")),
    )
    op.create_index(
        op.f("ix_break_proposals_break_id"), "break_proposals", ["break_id"], unique=False
    )
    op.create_index(
        "ix_break_proposals_status_id", "break_proposals", ["status", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_break_proposals_status_id", table_name="break_proposals")
    op.drop_index(op.f("ix_break_proposals_break_id"), table_name="break_proposals")
    op.drop_table("break_proposals")
