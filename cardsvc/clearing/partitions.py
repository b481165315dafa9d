"""Daily partitions of the record and journal tables (DESIGN §14), PostgreSQL only.

``offline_records``, ``ledger_transactions`` and ``ledger_lines`` are partitioned by range of
``clearing_date``, one partition per day (``<table>_YYYYMMDD``), so that settling a day reads one
partition of each. Each also has a default partition (``<table>_default``) that only ever holds
rows whose day has no partition yet, so that an acceptance never fails for want of one.

The day cut creates the partitions ahead (``partitions_ahead_days``); the migration creates those
of the days already in the tables. A partition is made without blocking writers: the table is
created on its own and then attached, which takes only a SHARE UPDATE EXCLUSIVE lock on the
parent (inserts and reads go on), under a short lock timeout (a busy moment is retried at the next
cut; meanwhile the default partition takes that day's rows). Rows of the day found in the default
partition are moved into the new one in the same transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc.logging import get_logger

log = get_logger(__name__)

PARTITIONED_TABLES: Final = ("offline_records", "ledger_transactions", "ledger_lines")
PARTITION_NAME: Final = re.compile(
    r"^(?:offline_records|ledger_transactions|ledger_lines)_(?:\d{8}|default)$"
)
# Serializes partition maintenance between processes (two API workers starting, the worker's cut).
_ADVISORY_KEY: Final = 0x43_4C_52_50  # "CLRP"


def partition_name(table: str, day: date) -> str:
    return f"{table}_{day:%Y%m%d}"


def default_name(table: str) -> str:
    return f"{table}_default"


def is_partition(name: str) -> bool:
    """A partition's name (Alembic compares the parents only)."""
    return PARTITION_NAME.match(name) is not None


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def create_default_sql(table: str) -> str:
    return f"CREATE TABLE {default_name(table)} PARTITION OF {table} DEFAULT"


def create_partition_sql(table: str, day: date) -> list[str]:
    """The statements that add ``day``'s partition to ``table`` (names are built from constants
    and a date, never from input)."""
    name = partition_name(table, day)
    low, high = day.isoformat(), (day + timedelta(days=1)).isoformat()
    return [
        f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        # Usually moves nothing: the default partition holds a day's rows only until its
        # partition exists. Locked first, so that no row of the day slips in behind the move.
        f"LOCK TABLE {default_name(table)} IN ACCESS EXCLUSIVE MODE",
        f"WITH moved AS (DELETE FROM {default_name(table)} "  # noqa: S608
        f"WHERE clearing_date >= '{low}' AND clearing_date < '{high}' RETURNING *) "
        f"INSERT INTO {name} SELECT * FROM moved",
        f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{low}') TO ('{high}')",
    ]


async def existing(session: AsyncSession, table: str) -> set[str]:
    rows = await session.execute(
        text(
            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
            "JOIN pg_class AS p ON p.oid = i.inhparent WHERE p.relname = :table"
        ),
        {"table": table},
    )
    return {str(name) for (name,) in rows}


async def ensure_days(
    sessions: async_sessionmaker[AsyncSession], first: date, last: date
) -> list[str]:
    """Create the missing partitions of ``first`` .. ``last`` (PostgreSQL; nothing on SQLite);
    returns the names created. A partition that cannot be made now (a lock not granted within the
    timeout) is logged and left for the next attempt: its rows go to the default partition."""
    created: list[str] = []
    async with sessions() as session:
        if session.get_bind().dialect.name != "postgresql":
            return created
        have = {table: await existing(session, table) for table in PARTITIONED_TABLES}
    for table in PARTITIONED_TABLES:
        for day in _days(first, last):
            name = partition_name(table, day)
            if name in have[table]:
                continue
            try:
                async with sessions() as session, session.begin():
                    await session.execute(text("SET LOCAL lock_timeout = '2s'"))
                    await session.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY}
                    )
                    if name in await existing(session, table):
                        continue  # made by another process meanwhile
                    for statement in create_partition_sql(table, day):
                        await session.execute(text(statement))
                created.append(name)
            except DBAPIError as error:
                log.warning("clearing.partition_deferred", partition=name, error=str(error)[:200])
    if created:
        log.info("clearing.partitions_created", partitions=created)
    return created
