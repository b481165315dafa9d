"""SQL of the blacklist."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.blacklist.models import BlacklistChangeRow, BlacklistEntry, ListVersion
from cardsvc.sql import bump_counter

BLACKLIST = "blacklist"


async def current_version(session: AsyncSession) -> int:
    row = await session.get(ListVersion, BLACKLIST)
    return row.version if row else 0


async def bump_version(session: AsyncSession) -> int:
    return await bump_counter(session, ListVersion.version, ListVersion.name, BLACKLIST)


async def get_entry(session: AsyncSession, asn: str) -> BlacklistEntry | None:
    return await session.get(BlacklistEntry, asn)


async def add_change(session: AsyncSession, change: BlacklistChangeRow) -> None:
    session.add(change)
    await session.flush()


async def add_entry(session: AsyncSession, entry: BlacklistEntry) -> None:
    session.add(entry)
    await session.flush()


async def delete_entry(session: AsyncSession, entry: BlacklistEntry) -> None:
    await session.delete(entry)
    await session.flush()


async def changes_since(session: AsyncSession, version: int) -> list[BlacklistChangeRow]:
    stmt = (
        select(BlacklistChangeRow)
        .where(BlacklistChangeRow.version > version)
        .order_by(BlacklistChangeRow.version)
    )
    return list((await session.execute(stmt)).scalars())


async def all_entries(session: AsyncSession) -> list[BlacklistEntry]:
    return list(
        (await session.execute(select(BlacklistEntry).order_by(BlacklistEntry.asn))).scalars()
    )


async def entries_among(session: AsyncSession, asns: Collection[str], at: datetime) -> set[str]:
    found: set[str] = set()
    ordered = sorted(set(asns))
    # Chunked IN lists keep each statement under the engines' parameter limits.
    for start in range(0, len(ordered), 500):
        chunk = ordered[start : start + 500]
        stmt = select(BlacklistEntry.asn).where(
            BlacklistEntry.asn.in_(chunk), BlacklistEntry.effective_at <= at
        )
        found.update((await session.execute(stmt)).scalars())
    return found
