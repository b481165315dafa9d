"""Break items become a core domain (cardsvc.breaks): one table for every kind of break.

The rows stay in ``break_items``; the table loses its foreign key into offline records (any domain
may open a break, so a break names its source by plain references: ``source`` and ``source_id``)
and gains what finance works breaks with: amount, clearing date, terminal, resolver, resolution
and note, and an optional key that makes opening idempotent. Existing rows are offline-record
breaks: their clearing date is their batch's, their amount the record's (a counter gap's is not
known), and counter gaps already filled get the resolution the uploads now give them.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KINDS = ("counter_gap", "gray", "tac_failed")
_KINDS = (*_OLD_KINDS, "refused_paid", "aged_load")


def _kind(kinds: Sequence[str], length: int) -> sa.Enum:
    return sa.Enum(*kinds, name="breakkind", native_enum=False, length=length)


def upgrade() -> None:
    with op.batch_alter_table("break_items") as batch:
        batch.drop_constraint("fk_break_items_record_id_offline_records", type_="foreignkey")
        batch.drop_index("ix_break_items_status")
        batch.alter_column("kind", type_=_kind(_KINDS, 32), existing_nullable=False)
        batch.alter_column("asn", existing_type=sa.String(16), nullable=True)
        batch.alter_column("counter", existing_type=sa.Integer(), nullable=True)
        batch.alter_column(
            "record_id", new_column_name="source_id", type_=sa.BigInteger(), existing_nullable=True
        )
        batch.alter_column(
            "detail", new_column_name="reason", existing_type=sa.String(200), nullable=False
        )
        batch.add_column(sa.Column("amount", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("clearing_date", sa.Date(), nullable=True))
        batch.add_column(
            sa.Column("source", sa.String(32), nullable=False, server_default="offline_record")
        )
        batch.add_column(sa.Column("terminal_no", sa.String(12), nullable=True))
        batch.add_column(sa.Column("reference", sa.String(64), nullable=True))
        batch.add_column(sa.Column("open_key", sa.String(128), nullable=True))
        batch.add_column(sa.Column("resolver", sa.String(64), nullable=True))
        batch.add_column(sa.Column("resolution", sa.String(32), nullable=True))
        batch.add_column(sa.Column("note", sa.String(500), nullable=True))

    op.execute(
        "UPDATE break_items SET "
        "clearing_date = (SELECT u.clearing_date FROM offline_records AS r "
        "JOIN upload_batches AS u ON u.id = r.batch_id WHERE r.id = break_items.source_id), "
        "terminal_no = (SELECT r.terminal_no FROM offline_records AS r "
        "WHERE r.id = break_items.source_id), "
        "amount = CASE WHEN kind = 'counter_gap' THEN NULL ELSE (SELECT r.amount "
        "FROM offline_records AS r WHERE r.id = break_items.source_id) END"
    )
    day = (
        "date(created_at)" if op.get_bind().dialect.name == "sqlite" else "CAST(created_at AS DATE)"
    )
    op.execute(f"UPDATE break_items SET clearing_date = {day} WHERE clearing_date IS NULL")
    op.execute(
        "UPDATE break_items SET resolver = 'system:uploads', resolution = 'filled', "
        "note = reason, reason = 'counter not seen' "
        "WHERE kind = 'counter_gap' AND status = 'resolved'"
    )

    with op.batch_alter_table("break_items") as batch:
        batch.alter_column("clearing_date", existing_type=sa.Date(), nullable=False)
        batch.alter_column("source", existing_type=sa.String(32), server_default=None)
        batch.create_unique_constraint(batch.f("uq_break_items_open_key"), ["open_key"])
        batch.create_index(
            "ix_break_items_status_clearing_date", ["status", "clearing_date"], unique=False
        )


def downgrade() -> None:
    # Breaks of the kinds and sources 0007 introduced do not fit the older table.
    op.execute(
        "DELETE FROM break_items WHERE kind NOT IN ('counter_gap', 'gray', 'tac_failed') "
        "OR source <> 'offline_record' OR asn IS NULL OR counter IS NULL "
        "OR source_id NOT IN (SELECT id FROM offline_records)"
    )
    op.execute(
        "UPDATE break_items SET reason = note WHERE resolution = 'filled' AND note IS NOT NULL"
    )
    with op.batch_alter_table("break_items") as batch:
        batch.drop_index("ix_break_items_status_clearing_date")
        batch.drop_constraint("uq_break_items_open_key", type_="unique")
        for name in (
            "note", "resolution", "resolver", "open_key", "reference", "terminal_no", "source",
            "clearing_date", "amount",
        ):  # fmt: skip
            batch.drop_column(name)
        batch.alter_column(
            "reason", new_column_name="detail", existing_type=sa.String(200), nullable=False
        )
        batch.alter_column(
            "source_id",
            new_column_name="record_id",
            type_=sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            existing_nullable=True,
        )
        batch.alter_column("counter", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("asn", existing_type=sa.String(16), nullable=False)
        batch.alter_column("kind", type_=_kind(_OLD_KINDS, 16), existing_nullable=False)
        batch.create_index("ix_break_items_status", ["status"], unique=False)
    # Its own step: SQLite's copy of the table takes the key only once the column is renamed.
    with op.batch_alter_table("break_items") as batch:
        batch.create_foreign_key(
            "fk_break_items_record_id_offline_records", "offline_records", ["record_id"], ["id"]
        )
