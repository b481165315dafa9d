"""Partition the record and journal tables by clearing date; keys that stay unique across days.

On PostgreSQL ``offline_records``, ``ledger_transactions`` and ``ledger_lines`` become tables
partitioned by range of ``clearing_date`` (one partition per day, plus a default partition;
``cardsvc.clearing.partitions``), with the primary key (clearing_date, id). A unique index of a
partitioned table must include the partition key, so the keys that must stay unique across every
day move to tables of their own: ``ledger_transaction_keys`` (idempotency key, the reversed
transaction) and ``offline_card_keys`` / ``offline_serial_keys`` (the duplicate keys of accepted
records). Ledger lines take their transaction's clearing date; refused records take their
upload's. SQLite gets the same columns and key tables, unpartitioned.

Each table is rebuilt (renamed aside, created anew, copied, dropped), in one transaction.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from cardsvc.clearing.partitions import create_default_sql, create_partition_sql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_SIDE = sa.Enum("debit", "credit", name="side", native_enum=False, length=8)

_RECORD_COLUMNS = (
    "id", "batch_id", "position", "result_code", "detail", "merchant_id",
    "uploading_terminal_id", "asn", "card_id", "card_type", "tx_type", "offline_counter",
    "balance_before", "amount", "fare", "terminal_no", "psam_no", "terminal_serial",
    "tx_datetime", "tx_time", "key_version", "tac", "gray", "blacklisted", "compound", "raw",
    "clearing_date", "received_at",
)  # fmt: skip
_TX_COLUMNS = (
    "id", "tx_type", "clearing_date", "record_ref", "hold_id", "amount", "line_count",
    "description", "posted_at",
)  # fmt: skip
_CLAIMING = "result_code IN ('00', '10')"


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _pk(name: str) -> sa.PrimaryKeyConstraint:
    """(clearing_date, id) on PostgreSQL, where the partition key must be in it; id on SQLite,
    whose rowid alias makes a one-column integer key its own sequence."""
    columns = ("clearing_date", "id") if _pg() else ("id",)
    return sa.PrimaryKeyConstraint(*columns, name=name)


def _partitioned() -> dict[str, Any]:
    return {"postgresql_partition_by": "RANGE (clearing_date)"} if _pg() else {}


def _aside(table: str, indexes: Sequence[str]) -> str:
    """Rename ``table`` out of the way, freeing the names its replacement takes."""
    legacy = f"{table}_legacy"
    for index in indexes:
        op.drop_index(index, table_name=table)
    op.rename_table(table, legacy)
    if _pg():
        op.execute(f"ALTER TABLE {legacy} RENAME CONSTRAINT pk_{table} TO pk_{legacy}")
        op.execute(f"ALTER SEQUENCE IF EXISTS {table}_id_seq RENAME TO {legacy}_id_seq")
    return legacy


def _partitions_for(table: str, source: str) -> None:
    """The default partition, and one partition per day already in ``source``."""
    if not _pg():
        return
    op.execute(create_default_sql(table))
    days = op.get_bind().execute(sa.text(f"SELECT DISTINCT clearing_date FROM {source}"))
    for (day,) in days:
        for statement in create_partition_sql(table, day):
            op.execute(statement)


def _restart_sequence(sequence: str, table: str, column: str = "id") -> None:
    if _pg():
        op.execute(
            f"SELECT setval('{sequence}', coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)"
        )


def _records_table(clearing_nullable: bool) -> None:
    op.create_table(
        "offline_records",
        sa.Column("id", _PK, nullable=False, autoincrement=True),
        sa.Column("batch_id", _PK, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("result_code", sa.String(length=2), nullable=False),
        sa.Column("detail", sa.String(length=200), nullable=True),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("uploading_terminal_id", sa.BigInteger(), nullable=False),
        sa.Column("asn", sa.String(length=16), nullable=True),
        sa.Column("card_id", sa.BigInteger(), nullable=True),
        sa.Column("card_type", sa.String(length=2), nullable=True),
        sa.Column("tx_type", sa.Integer(), nullable=True),
        sa.Column("offline_counter", sa.Integer(), nullable=True),
        sa.Column("balance_before", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("fare", sa.BigInteger(), nullable=True),
        sa.Column("terminal_no", sa.String(length=12), nullable=True),
        sa.Column("psam_no", sa.String(length=20), nullable=True),
        sa.Column("terminal_serial", sa.BigInteger(), nullable=True),
        sa.Column("tx_datetime", sa.String(length=14), nullable=True),
        sa.Column("tx_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("key_version", sa.Integer(), nullable=True),
        sa.Column("tac", sa.String(length=8), nullable=True),
        sa.Column("gray", sa.Boolean(), nullable=False),
        sa.Column("blacklisted", sa.Boolean(), nullable=False),
        sa.Column("compound", sa.JSON(), nullable=True),
        sa.Column("raw", sa.JSON(), nullable=True),
        sa.Column("clearing_date", sa.Date(), nullable=clearing_nullable),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["upload_batches.id"],
            name=op.f("fk_offline_records_batch_id_upload_batches"),
        ),
        _pk("pk_offline_records")
        if not clearing_nullable
        else sa.PrimaryKeyConstraint("id", name="pk_offline_records"),
        **({} if clearing_nullable else _partitioned()),
    )
    op.create_index(
        "ix_offline_records_batch_id_position", "offline_records", ["batch_id", "position"]
    )


def upgrade() -> None:
    with op.batch_alter_table("clearing_days") as batch:
        batch.add_column(sa.Column("cut_at", sa.DateTime(timezone=True), nullable=True))
    # --- offline records and their keys ---
    op.execute(
        "UPDATE offline_records SET clearing_date = (SELECT b.clearing_date FROM upload_batches "
        "AS b WHERE b.id = offline_records.batch_id) WHERE clearing_date IS NULL"
    )
    legacy = _aside(
        "offline_records",
        [
            "uq_offline_records_asn_counter",
            "uq_offline_records_terminal_serial",
            "ix_offline_records_batch_id_position",
            "ix_offline_records_clearing_date_merchant_id",
        ],
    )
    _records_table(clearing_nullable=False)
    _partitions_for("offline_records", legacy)
    names = ", ".join(_RECORD_COLUMNS)
    op.execute(f"INSERT INTO offline_records ({names}) SELECT {names} FROM {legacy}")
    _restart_sequence("offline_records_id_seq", "offline_records")
    op.create_table(
        "offline_card_keys",
        sa.Column("asn", sa.String(length=16), nullable=False),
        sa.Column("offline_counter", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("balance_before", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("asn", "offline_counter", name=op.f("pk_offline_card_keys")),
    )
    op.create_table(
        "offline_serial_keys",
        sa.Column("terminal_no", sa.String(length=12), nullable=False),
        sa.Column("terminal_serial", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint(
            "terminal_no", "terminal_serial", name=op.f("pk_offline_serial_keys")
        ),
    )
    op.execute(
        "INSERT INTO offline_card_keys (asn, offline_counter, record_id, clearing_date, "
        "balance_before, amount) SELECT asn, offline_counter, id, clearing_date, balance_before, "
        f"amount FROM {legacy} WHERE {_CLAIMING} AND asn IS NOT NULL "
        "AND offline_counter IS NOT NULL"
    )
    op.execute(
        "INSERT INTO offline_serial_keys (terminal_no, terminal_serial, record_id, clearing_date) "
        f"SELECT terminal_no, terminal_serial, id, clearing_date FROM {legacy} WHERE {_CLAIMING} "
        "AND terminal_no IS NOT NULL AND terminal_serial IS NOT NULL"
    )
    op.drop_table(legacy)

    # --- the journal ---
    op.create_table(
        "ledger_transaction_keys",
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("reverses_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["reverses_id"],
            ["ledger_transaction_keys.transaction_id"],
            name=op.f("fk_ledger_transaction_keys_reverses_id_ledger_transaction_keys"),
        ),
        sa.PrimaryKeyConstraint("idempotency_key", name=op.f("pk_ledger_transaction_keys")),
        sa.UniqueConstraint(
            "transaction_id", name=op.f("uq_ledger_transaction_keys_transaction_id")
        ),
        sa.UniqueConstraint("reverses_id", name=op.f("uq_ledger_transaction_keys_reverses_id")),
    )
    # Keys in id order, so that a reversal's target is always already there.
    op.execute(
        "INSERT INTO ledger_transaction_keys (idempotency_key, transaction_id, clearing_date, "
        "content_hash, reverses_id) SELECT idempotency_key, id, clearing_date, content_hash, "
        "reverses_id FROM ledger_transactions ORDER BY id"
    )
    if _pg():
        op.execute("CREATE SEQUENCE ledger_transaction_ids AS BIGINT")
        _restart_sequence("ledger_transaction_ids", "ledger_transaction_keys", "transaction_id")
    with op.batch_alter_table("ledger_holds") as batch:
        batch.drop_constraint(
            "fk_ledger_holds_transaction_id_ledger_transactions", type_="foreignkey"
        )
        batch.create_foreign_key(
            op.f("fk_ledger_holds_transaction_id_ledger_transaction_keys"),
            "ledger_transaction_keys",
            ["transaction_id"],
            ["transaction_id"],
        )

    lines_legacy = _aside(
        "ledger_lines",
        ["ix_ledger_lines_account_id_transaction_id", "ix_ledger_lines_transaction_id"],
    )
    tx_legacy = _aside(
        "ledger_transactions",
        [
            "ix_ledger_transactions_clearing_date",
            "ix_ledger_transactions_posted_at",
            "ix_ledger_transactions_record_ref",
        ],
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("tx_type", sa.String(length=32), nullable=False),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("record_ref", sa.String(length=128), nullable=True),
        sa.Column("hold_id", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_transactions_amount_positive")),
        sa.ForeignKeyConstraint(
            ["id"],
            ["ledger_transaction_keys.transaction_id"],
            name=op.f("fk_ledger_transactions_id_ledger_transaction_keys"),
        ),
        _pk("pk_ledger_transactions"),
        **_partitioned(),
    )
    _partitions_for("ledger_transactions", tx_legacy)
    names = ", ".join(_TX_COLUMNS)
    op.execute(f"INSERT INTO ledger_transactions ({names}) SELECT {names} FROM {tx_legacy}")

    op.create_table(
        "ledger_lines",
        sa.Column("id", _PK, nullable=False, autoincrement=True),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", _PK, nullable=False),
        sa.Column("side", _SIDE, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_lines_amount_positive")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_lines_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction_keys.transaction_id"],
            name=op.f("fk_ledger_lines_transaction_id_ledger_transaction_keys"),
        ),
        _pk("pk_ledger_lines"),
        **_partitioned(),
    )
    op.create_index(
        "ix_ledger_lines_account_id_transaction_id",
        "ledger_lines",
        ["account_id", "transaction_id"],
    )
    op.create_index(op.f("ix_ledger_lines_transaction_id"), "ledger_lines", ["transaction_id"])
    _partitions_for("ledger_lines", tx_legacy)
    op.execute(
        "INSERT INTO ledger_lines (id, clearing_date, transaction_id, account_id, side, amount) "
        "SELECT l.id, t.clearing_date, l.transaction_id, l.account_id, l.side, l.amount "
        f"FROM {lines_legacy} AS l JOIN {tx_legacy} AS t ON t.id = l.transaction_id"
    )
    _restart_sequence("ledger_lines_id_seq", "ledger_lines")
    op.drop_table(lines_legacy)
    op.drop_table(tx_legacy)


def downgrade() -> None:
    # --- the journal, back to one table each with its keys inside ---
    lines_legacy = _aside(
        "ledger_lines",
        ["ix_ledger_lines_account_id_transaction_id", "ix_ledger_lines_transaction_id"],
    )
    tx_legacy = _aside("ledger_transactions", [])
    op.create_table(
        "ledger_transactions",
        sa.Column("id", _PK, nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("tx_type", sa.String(length=32), nullable=False),
        sa.Column("clearing_date", sa.Date(), nullable=False),
        sa.Column("record_ref", sa.String(length=128), nullable=True),
        sa.Column("reverses_id", _PK, nullable=True),
        sa.Column("hold_id", sa.BigInteger(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_transactions_amount_positive")),
        sa.ForeignKeyConstraint(
            ["reverses_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_transactions_reverses_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transactions")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_ledger_transactions_idempotency_key")),
        sa.UniqueConstraint("reverses_id", name=op.f("uq_ledger_transactions_reverses_id")),
    )
    op.create_index(
        op.f("ix_ledger_transactions_clearing_date"), "ledger_transactions", ["clearing_date"]
    )
    op.create_index(op.f("ix_ledger_transactions_posted_at"), "ledger_transactions", ["posted_at"])
    op.create_index(
        op.f("ix_ledger_transactions_record_ref"), "ledger_transactions", ["record_ref"]
    )
    op.execute(
        "INSERT INTO ledger_transactions (id, idempotency_key, content_hash, tx_type, "
        "clearing_date, record_ref, reverses_id, hold_id, amount, line_count, description, "
        "posted_at) SELECT t.id, k.idempotency_key, k.content_hash, t.tx_type, t.clearing_date, "
        "t.record_ref, k.reverses_id, t.hold_id, t.amount, t.line_count, t.description, "
        f"t.posted_at FROM {tx_legacy} AS t JOIN ledger_transaction_keys AS k "
        "ON k.transaction_id = t.id ORDER BY t.id"
    )
    _restart_sequence("ledger_transactions_id_seq", "ledger_transactions")
    op.create_table(
        "ledger_lines",
        sa.Column("id", _PK, nullable=False),
        sa.Column("transaction_id", _PK, nullable=False),
        sa.Column("account_id", _PK, nullable=False),
        sa.Column("side", _SIDE, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_lines_amount_positive")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_lines_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_lines_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_lines")),
    )
    op.create_index(
        "ix_ledger_lines_account_id_transaction_id",
        "ledger_lines",
        ["account_id", "transaction_id"],
    )
    op.create_index(op.f("ix_ledger_lines_transaction_id"), "ledger_lines", ["transaction_id"])
    op.execute(
        "INSERT INTO ledger_lines (id, transaction_id, account_id, side, amount) "
        f"SELECT id, transaction_id, account_id, side, amount FROM {lines_legacy}"
    )
    _restart_sequence("ledger_lines_id_seq", "ledger_lines")
    op.drop_table(lines_legacy)
    with op.batch_alter_table("ledger_holds") as batch:
        batch.drop_constraint(
            "fk_ledger_holds_transaction_id_ledger_transaction_keys", type_="foreignkey"
        )
        batch.create_foreign_key(
            op.f("fk_ledger_holds_transaction_id_ledger_transactions"),
            "ledger_transactions",
            ["transaction_id"],
            ["id"],
        )
    op.drop_table(tx_legacy)
    if _pg():
        op.execute("DROP SEQUENCE ledger_transaction_ids")
    op.drop_table("ledger_transaction_keys")

    # --- offline records, with their partial unique indexes again ---
    legacy = _aside("offline_records", ["ix_offline_records_batch_id_position"])
    _records_table(clearing_nullable=True)
    names = ", ".join(_RECORD_COLUMNS)
    op.execute(f"INSERT INTO offline_records ({names}) SELECT {names} FROM {legacy}")
    op.execute(f"UPDATE offline_records SET clearing_date = NULL WHERE NOT ({_CLAIMING})")
    _restart_sequence("offline_records_id_seq", "offline_records")
    op.drop_table(legacy)
    op.drop_table("offline_serial_keys")
    op.drop_table("offline_card_keys")
    op.create_index(
        "ix_offline_records_clearing_date_merchant_id",
        "offline_records",
        ["clearing_date", "merchant_id"],
    )
    for name, columns in (
        ("uq_offline_records_asn_counter", ["asn", "offline_counter"]),
        ("uq_offline_records_terminal_serial", ["terminal_no", "terminal_serial"]),
    ):
        op.create_index(
            name,
            "offline_records",
            columns,
            unique=True,
            postgresql_where=sa.text(_CLAIMING),
            sqlite_where=sa.text(_CLAIMING),
        )
    with op.batch_alter_table("clearing_days") as batch:
        batch.drop_column("cut_at")
