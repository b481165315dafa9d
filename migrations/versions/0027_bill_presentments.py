"""Bill presentments: what a biller presented for a bill key, kept until a payment echoes its
reference (the amount due, the bill and whether partial payment is allowed come from here, not
from the client).

Revision ID: 0027
Revises: 0026
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "bill_presentments",
        sa.Column("id", ID, nullable=False),
        sa.Column("biller_code", sa.String(length=16), nullable=False),
        sa.Column("bill_key", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("bill_id", sa.String(length=64), nullable=False),
        sa.Column("holder_masked", sa.String(length=32), nullable=False),
        sa.Column("amount_due", sa.BigInteger(), nullable=False),
        sa.Column("late_fee", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.String(length=6), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("partial_allowed", sa.Boolean(), nullable=False),
        sa.Column("min_amount", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bill_presentments")),
        sa.UniqueConstraint(
            "biller_code", "reference", name=op.f("uq_bill_presentments_biller_code_reference")
        ),
    )


def downgrade() -> None:
    op.drop_table("bill_presentments")
