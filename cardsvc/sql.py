"""SQL helpers shared by the repositories of every domain, on both engines.

PostgreSQL and SQLite both support ``INSERT ... ON CONFLICT DO NOTHING`` but SQLAlchemy builds it
from each dialect's own ``insert``; these helpers pick the dialect of the session's connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute


def dialect_insert(dialect: str, table: Table | Any) -> Any:
    """The dialect's own ``INSERT`` (the one with ``on_conflict_do_*``) for ``table``."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def insert_ignore_stmt(session: AsyncSession, table: Table | Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for ``table``; values are given at execution or with
    ``.values()``, and ``.returning()`` yields no row when the key already existed."""
    return dialect_insert(session.get_bind().dialect.name, table).on_conflict_do_nothing()


async def insert_ignore(
    session: AsyncSession, table: Table | Any, values: Mapping[str, Any]
) -> None:
    """Insert a row unless its key exists."""
    await session.execute(insert_ignore_stmt(session, table).values(**values))


async def bump_counter(
    session: AsyncSession,
    counter: InstrumentedAttribute[int],
    key: InstrumentedAttribute[str],
    name: str,
) -> int:
    """Add one to the ``counter`` of the row whose ``key`` is ``name`` and return the new value; the
    row starts at 0 on first use. The UPDATE locks the row itself, so concurrent bumps serialize;
    two first uses both insert-if-absent and then both bump."""
    model = counter.class_
    stmt = update(model).where(key == name).values({counter: counter + 1}).returning(counter)
    value = (await session.execute(stmt)).scalar_one_or_none()
    if value is None:
        await insert_ignore(session, model.__table__, {key.key: name, counter.key: 0})
        value = (await session.execute(stmt)).scalar_one()
    return int(value)
