"""The audit trail is keyed by the HSM: an entry is written without a number or a MAC and sealed
after its commit, in batches, by the HSM (``AUDIT_CHECKPOINT``), which anchors the head in its
own log; the unkeyed SHA-256 chain (``prev_hash``, ``hash``) is dropped.

Existing entries are kept and become unsealed, their numbers cleared: the first sealer after the
upgrade seals them in the order they were written (their old order), onto an HSM chain that
starts at entry 1.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64


def _iso(at: datetime) -> str:
    aware = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return aware.isoformat(timespec="microseconds")


def upgrade() -> None:
    with op.batch_alter_table("audit_entries") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=True)
        batch.alter_column(
            "hash", new_column_name="mac", existing_type=sa.String(length=64), nullable=True
        )
        batch.drop_column("prev_hash")
    op.execute("UPDATE audit_entries SET seq = NULL, mac = NULL")
    op.create_index(
        "ix_audit_entries_unsealed",
        "audit_entries",
        ["id"],
        unique=False,
        postgresql_where=sa.text("mac IS NULL"),
        sqlite_where=sa.text("mac IS NULL"),
    )
    with op.batch_alter_table("audit_head") as batch:
        batch.alter_column(
            "hash", new_column_name="mac", existing_type=sa.String(length=64), nullable=False
        )
    op.execute(f"UPDATE audit_head SET seq = 0, mac = '{GENESIS}'")


def downgrade() -> None:
    # The unkeyed chain of the earlier code is rebuilt over every entry, in the order written.
    op.drop_index("ix_audit_entries_unsealed", table_name="audit_entries")
    with op.batch_alter_table("audit_entries") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
    entries = sa.table(
        "audit_entries",
        *(sa.column(name) for name in ("id", "seq", "actor", "action", "entity", "entity_id")),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("before", sa.Text),
        sa.column("after", sa.Text),
        sa.column("prev_hash", sa.String),
        sa.column("mac", sa.String),
    )
    connection = op.get_bind()
    prev = GENESIS
    seq = 0
    rows = connection.execute(sa.select(entries).order_by(entries.c.id)).all()
    for row in rows:
        seq += 1
        body = json.dumps(
            [seq, _iso(row.at), row.actor, row.action, row.entity, row.entity_id, row.before,
             row.after],
            separators=(",", ":"),
            ensure_ascii=False,
        )  # fmt: skip
        digest = hashlib.sha256(f"{prev}|{body}".encode()).hexdigest()
        connection.execute(
            entries.update()
            .where(entries.c.id == row.id)
            .values(seq=seq, prev_hash=prev, mac=digest)
        )
        prev = digest
    with op.batch_alter_table("audit_entries") as batch:
        batch.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column(
            "mac", new_column_name="hash", existing_type=sa.String(length=64), nullable=False
        )
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
    with op.batch_alter_table("audit_head") as batch:
        batch.alter_column(
            "mac", new_column_name="hash", existing_type=sa.String(length=64), nullable=False
        )
    op.execute(
        sa.text("UPDATE audit_head SET seq = :seq, hash = :hash").bindparams(seq=seq, hash=prev)
    )
