"""SQL of the parameter tables."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from terminals.lists.models import ParameterChange, ParameterEntry


async def current_version(session: AsyncSession) -> int:
    return int(
        (
            await session.execute(select(func.coalesce(func.max(ParameterChange.version), 0)))
        ).scalar_one()
    )


async def add_change(session: AsyncSession, change: ParameterChange) -> None:
    # The version is the primary key: two concurrent writers cannot both take the same one.
    session.add(change)
    await session.flush()


async def get_entry(session: AsyncSession, table: str, key: str) -> ParameterEntry | None:
    return await session.get(ParameterEntry, (table, key))


async def add_entry(session: AsyncSession, entry: ParameterEntry) -> None:
    session.add(entry)
    await session.flush()


async def delete_entry(session: AsyncSession, table: str, key: str) -> None:
    await session.execute(
        delete(ParameterEntry).where(ParameterEntry.table_name == table, ParameterEntry.key == key)
    )


async def all_entries(session: AsyncSession) -> list[ParameterEntry]:
    stmt = select(ParameterEntry).order_by(ParameterEntry.table_name, ParameterEntry.key)
    return list((await session.execute(stmt)).scalars())


async def changes_since(session: AsyncSession, version: int, limit: int) -> list[ParameterChange]:
    stmt = (
        select(ParameterChange)
        .where(ParameterChange.version > version)
        .order_by(ParameterChange.version)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())
