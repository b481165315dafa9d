"""SQL of offline uploads: bulk statements only (one round trip per step, never per record).

PostgreSQL paths pass each key column as one array and join to ``unnest`` of it: the statement
text is the same whatever the batch size, so asyncpg's prepared statement is reused, and the
look-up stays a hash join or one index probe per key after PostgreSQL switches the prepared
statement to its generic plan (sixth execution). Under that plan an ``IN`` list of 500 bound
parameters, and ``= ANY(array parameter)`` too, is compared linearly for every row scanned: a
cost that grows with the table, for the chain look-up and the card look-up alike
(``bench/uploads.py`` runs batches onto a growing table). SQLite keeps the portable Core
statements.

Duplicate look-ups and the chain so far read the key tables (``offline_card_keys``,
``offline_serial_keys``), which are not partitioned: the record table, partitioned by clearing
date on PostgreSQL, is only ever written here.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, String, func, insert, select, text, tuple_, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.cards.models import Card
from terminals.uploads.models import (
    CLAIMING_CODES,
    OfflineCardKey,
    OfflineRecord,
    OfflineSerialKey,
    UploadBatch,
)


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


@dataclass(frozen=True, slots=True)
class CardRow:
    id: int
    card_no: str
    asn: str
    status: str
    key_version: int


async def batch_by_no(session: AsyncSession, terminal_id: int, batch_no: int) -> UploadBatch | None:
    stmt = select(UploadBatch).where(
        UploadBatch.terminal_id == terminal_id, UploadBatch.batch_no == batch_no
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def cards_by_asn(session: AsyncSession, asns: Collection[str]) -> dict[str, CardRow]:
    if not asns:
        return {}
    if _is_postgres(session):
        rows: Any = await session.execute(
            text(
                "SELECT c.id, c.card_no, c.asn, c.status, c.key_version FROM cards AS c "
                "JOIN unnest(CAST(:asns AS VARCHAR[])) AS k(asn) ON c.asn = k.asn"
            ),
            {"asns": list(asns)},
        )
    else:
        rows = await session.execute(
            select(Card.id, Card.card_no, Card.asn, Card.status, Card.key_version).where(
                Card.asn.in_(list(asns))
            )
        )
    return {
        row[2]: CardRow(
            id=row[0], card_no=row[1], asn=row[2], status=str(row[3]), key_version=row[4]
        )
        for row in rows
    }


async def claimed_keys(
    session: AsyncSession,
    card_keys: Collection[tuple[str, int]],
    serial_keys: Collection[tuple[str, int]],
) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """Which (ASN, offline counter) and which (terminal number, terminal serial) pairs an
    accepted record already holds; on PostgreSQL both in one round trip."""
    if not _is_postgres(session):
        return (
            await claimed_card_keys(session, card_keys),
            await claimed_serial_keys(session, serial_keys),
        )
    if not card_keys and not serial_keys:
        return set(), set()
    # One probe of the key table's primary key per key: the LIMIT keeps each lateral subquery
    # from being flattened into a join, which the planner may otherwise run as a hash join over
    # every key ever accepted, a cost that grows with the table.
    rows = await session.execute(
        text(
            "SELECT 0, k.a, k.c "
            "FROM unnest(CAST(:asns AS VARCHAR[]), CAST(:counters AS INTEGER[])) AS k(a, c) "
            "JOIN LATERAL (SELECT 1 FROM offline_card_keys AS h "
            "WHERE h.asn = k.a AND h.offline_counter = k.c LIMIT 1) AS hit ON true "
            "UNION ALL "
            "SELECT 1, k.t, k.s "
            "FROM unnest(CAST(:terminals AS VARCHAR[]), CAST(:serials AS BIGINT[])) AS k(t, s) "
            "JOIN LATERAL (SELECT 1 FROM offline_serial_keys AS h "
            "WHERE h.terminal_no = k.t AND h.terminal_serial = k.s LIMIT 1) AS hit ON true"
        ),
        {
            "asns": [k[0] for k in card_keys],
            "counters": [k[1] for k in card_keys],
            "terminals": [k[0] for k in serial_keys],
            "serials": [k[1] for k in serial_keys],
        },
    )
    held: tuple[set[tuple[str, int]], set[tuple[str, int]]] = (set(), set())
    for which, key, number in rows:
        held[which].add((str(key), int(number)))
    return held


async def claimed_card_keys(
    session: AsyncSession, keys: Collection[tuple[str, int]]
) -> set[tuple[str, int]]:
    """Which (ASN, offline counter) pairs an accepted record already holds."""
    if not keys:
        return set()
    if _is_postgres(session):
        return (await claimed_keys(session, keys, ()))[0]
    stmt = select(OfflineCardKey.asn, OfflineCardKey.offline_counter).where(
        tuple_(OfflineCardKey.asn, OfflineCardKey.offline_counter).in_(list(keys))
    )
    return {(str(a), int(c)) for a, c in await session.execute(stmt)}


async def claimed_serial_keys(
    session: AsyncSession, keys: Collection[tuple[str, int]]
) -> set[tuple[str, int]]:
    """Which (terminal number, terminal serial) pairs an accepted record already holds."""
    if not keys:
        return set()
    if _is_postgres(session):
        return (await claimed_keys(session, (), keys))[1]
    stmt = select(OfflineSerialKey.terminal_no, OfflineSerialKey.terminal_serial).where(
        tuple_(OfflineSerialKey.terminal_no, OfflineSerialKey.terminal_serial).in_(list(keys))
    )
    return {(str(t), int(s)) for t, s in await session.execute(stmt)}


async def highest_counters(session: AsyncSession, asns: Collection[str]) -> dict[str, int]:
    """Per card, the highest offline counter of an accepted record (the chain so far)."""
    if not asns:
        return {}
    if _is_postgres(session):
        # One backward probe of the card keys' primary key per card, however many records the
        # card already has.
        rows: Any = await session.execute(
            text(
                "SELECT k.asn, (SELECT max(h.offline_counter) FROM offline_card_keys AS h "
                "WHERE h.asn = k.asn) "
                "FROM unnest(CAST(:asns AS VARCHAR[])) AS k(asn)"
            ),
            {"asns": list(asns)},
        )
    else:
        rows = await session.execute(
            select(OfflineCardKey.asn, func.max(OfflineCardKey.offline_counter))
            .where(OfflineCardKey.asn.in_(list(asns)))
            .group_by(OfflineCardKey.asn)
        )
    return {str(a): int(c) for a, c in rows if c is not None}


async def insert_batch(session: AsyncSession, values: dict[str, Any]) -> int:
    result = await session.execute(insert(UploadBatch).values(values).returning(UploadBatch.id))
    return int(result.scalar_one())


async def finish_batch(
    session: AsyncSession,
    batch_id: int,
    ledger_transaction_id: int | None,
    response: dict[str, Any],
) -> None:
    await session.execute(
        update(UploadBatch)
        .where(UploadBatch.id == batch_id)
        .values(ledger_transaction_id=ledger_transaction_id, response=response)
        .execution_options(synchronize_session=False)
    )


_UNNEST_INSERT: dict[str, tuple[str, tuple[str, ...], frozenset[str]]] = {}


def _unnest_insert_sql(dialect: Dialect) -> tuple[str, tuple[str, ...], frozenset[str]]:
    """One statement: the records from one array per column, each given an id from the table's
    sequence, and the keys of the accepted ones (``CLAIMING_CODES``) into the key tables."""
    if dialect.name in _UNNEST_INSERT:
        return _UNNEST_INSERT[dialect.name]
    columns = [c for c in OfflineRecord.__table__.columns if c.name != "id"]
    json_columns = frozenset(c.name for c in columns if isinstance(c.type, JSON))
    arrays, selected = [], []
    for c in columns:
        if c.name in json_columns:
            # JSON travels as its text (the same json.dumps the JSON type applies).
            arrays.append(f"CAST(:{c.name} AS TEXT[])")
            selected.append(f"CAST(u.{c.name} AS JSON) AS {c.name}")
        else:
            # Unsized VARCHAR: an explicit cast to VARCHAR(n) would silently truncate, while the
            # assignment to the column refuses a value that is too long, as the Core insert does.
            sql_type = "VARCHAR" if isinstance(c.type, String) else c.type.compile(dialect=dialect)
            arrays.append(f"CAST(:{c.name} AS {sql_type}[])")
            selected.append(f"u.{c.name}")
    names = ", ".join(c.name for c in columns)
    claiming = ", ".join(f"'{code}'" for code in sorted(CLAIMING_CODES))
    # Built once from the table's own metadata (column names and types), never from input.
    sql = (
        "WITH u AS MATERIALIZED ("  # noqa: S608
        f"SELECT nextval('offline_records_id_seq') AS id, {', '.join(selected)} "
        f"FROM unnest({', '.join(arrays)}) AS u({names})"
        f"), r AS (INSERT INTO offline_records (id, {names}) SELECT id, {names} FROM u), "
        "c AS (INSERT INTO offline_card_keys (asn, offline_counter, record_id, clearing_date, "
        "balance_before, amount) SELECT asn, offline_counter, id, clearing_date, balance_before, "
        f"amount FROM u WHERE result_code IN ({claiming})), "
        "s AS (INSERT INTO offline_serial_keys (terminal_no, terminal_serial, record_id, "
        "clearing_date) SELECT terminal_no, terminal_serial, id, clearing_date FROM u "
        f"WHERE result_code IN ({claiming})) "
    )
    built = sql, tuple(c.name for c in columns), json_columns
    _UNNEST_INSERT[dialect.name] = built
    return built


async def insert_records(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, want_ids: bool = True
) -> dict[int, int]:
    """Bulk insert of records and the keys of the accepted ones (one statement on PostgreSQL,
    executemany on SQLite); returns record id by position when asked (only break items need them,
    and sending every id back costs on every row). A key already held raises ``IntegrityError``."""
    if not rows:
        return {}
    if _is_postgres(session):
        sql, names, json_columns = _unnest_insert_sql(session.get_bind().dialect)
        params: dict[str, list[Any]] = {}
        for name in names:
            if name in json_columns:
                # SQLAlchemy's JSON type stores None as JSON null (none_as_null is off).
                params[name] = [json.dumps(r[name]) for r in rows]
            else:
                params[name] = [r[name] for r in rows]
        tail = "SELECT id, position FROM u" if want_ids else "SELECT 1"
        result = await session.execute(text(sql + tail), params)
        return {int(position): int(record_id) for record_id, position in result} if want_ids else {}
    stmt = insert(OfflineRecord).returning(
        OfflineRecord.id, OfflineRecord.position, sort_by_parameter_order=True
    )
    result = await session.execute(stmt, list(rows))
    ids = {int(position): int(record_id) for record_id, position in result}
    claimed = [r for r in rows if r["result_code"] in CLAIMING_CODES]
    if claimed:
        await session.execute(
            insert(OfflineCardKey),
            [
                {
                    "asn": r["asn"],
                    "offline_counter": r["offline_counter"],
                    "record_id": ids[r["position"]],
                    "clearing_date": r["clearing_date"],
                    "balance_before": r["balance_before"],
                    "amount": r["amount"],
                }
                for r in claimed
            ],
        )
        await session.execute(
            insert(OfflineSerialKey),
            [
                {
                    "terminal_no": r["terminal_no"],
                    "terminal_serial": r["terminal_serial"],
                    "record_id": ids[r["position"]],
                    "clearing_date": r["clearing_date"],
                }
                for r in claimed
            ],
        )
    return ids if want_ids else {}


async def records_of_batch(session: AsyncSession, batch: UploadBatch) -> list[OfflineRecord]:
    """The records of an upload, in their order, from the upload's day."""
    stmt = (
        select(OfflineRecord)
        .where(
            OfflineRecord.clearing_date == batch.clearing_date,
            OfflineRecord.batch_id == batch.id,
        )
        .order_by(OfflineRecord.position)
    )
    return list((await session.execute(stmt)).scalars())
