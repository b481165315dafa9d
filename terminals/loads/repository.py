"""SQL of purse loads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.sql import insert_ignore_stmt
from terminals.loads.models import LoadStatus, PurseLoad


async def insert_if_new(session: AsyncSession, values: Mapping[str, Any]) -> int | None:
    """Insert a load row; None when (terminal_no, terminal_serial) exists already."""
    table: Table = PurseLoad.__table__  # type: ignore[assignment]
    stmt = insert_ignore_stmt(session, table).values(**values).returning(table.c.id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get(session: AsyncSession, load_id: int) -> PurseLoad:
    row = await session.get(PurseLoad, load_id)
    if row is None:
        raise LookupError(f"purse load {load_id} vanished")
    return row


async def by_serial(
    session: AsyncSession, terminal_no: str, terminal_serial: int, *, for_update: bool = False
) -> PurseLoad | None:
    stmt = select(PurseLoad).where(
        PurseLoad.terminal_no == terminal_no, PurseLoad.terminal_serial == terminal_serial
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def of_card(session: AsyncSession, asn: str, *, for_update: bool = False) -> list[PurseLoad]:
    """Every load of the card that moved money (pending, confirmed, refunded), oldest first.

    Locked together so that two requests about the same card resolve its loads one at a time.
    """
    stmt = (
        select(PurseLoad)
        .where(PurseLoad.asn == asn, PurseLoad.status != LoadStatus.declined)
        .order_by(PurseLoad.id)
    )
    if for_update:
        stmt = stmt.with_for_update()
    return list((await session.execute(stmt)).scalars())


async def stale_against(
    session: AsyncSession, asn: str, online_counter: int, exclude_id: int
) -> PurseLoad | None:
    """A load that proves a card state with this online counter is old: one at a higher counter,
    or a confirmed one at the same counter."""
    stmt = select(PurseLoad).where(
        PurseLoad.asn == asn,
        PurseLoad.id != exclude_id,
        PurseLoad.status.in_((LoadStatus.pending, LoadStatus.confirmed)),
        or_(
            PurseLoad.online_counter > online_counter,
            (PurseLoad.online_counter == online_counter)
            & (PurseLoad.status == LoadStatus.confirmed),
        ),
    )
    return (await session.execute(stmt.limit(1))).scalar_one_or_none()


async def pending(session: AsyncSession, limit: int = 1000) -> list[PurseLoad]:
    stmt = (
        select(PurseLoad)
        .where(PurseLoad.status == LoadStatus.pending)
        .order_by(PurseLoad.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())
