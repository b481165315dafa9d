"""Personalization sessions driven by the server: the batch of APDUs out at the card, its number
and the digest of the responses that produced it, the issue date, who started it; one unfinished
session per chip.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = "status IN ('running', 'failed')"


def upgrade() -> None:
    with op.batch_alter_table("perso_jobs") as batch:
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("batch", sa.Text(), nullable=True))
        batch.add_column(sa.Column("answered_digest", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("issued_on", sa.Date(), nullable=True))
        batch.add_column(sa.Column("started_by", sa.String(length=64), nullable=True))
    with op.batch_alter_table("perso_jobs") as batch:
        batch.alter_column("seq", server_default=None, existing_type=sa.Integer())
    # Jobs of the old in-process runs that stopped: any later start resumes them as sessions.
    op.execute("UPDATE perso_jobs SET status = 'failed' WHERE status = 'running'")
    op.create_index(
        "uq_perso_jobs_live_chip",
        "perso_jobs",
        ["chip_serial"],
        unique=True,
        postgresql_where=sa.text(_LIVE),
        sqlite_where=sa.text(_LIVE),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_perso_jobs_live_chip",
        table_name="perso_jobs",
        postgresql_where=sa.text(_LIVE),
        sqlite_where=sa.text(_LIVE),
    )
    op.execute("UPDATE perso_jobs SET status = 'failed' WHERE status IN ('spoiled', 'abandoned')")
    with op.batch_alter_table("perso_jobs") as batch:
        batch.drop_column("started_by")
        batch.drop_column("issued_on")
        batch.drop_column("answered_digest")
        batch.drop_column("batch")
        batch.drop_column("seq")
