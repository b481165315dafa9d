"""SQL of purse loads."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from terminals.loads.models import LoadStatus, PurseLoad


async def add(session: AsyncSession, row: PurseLoad) -> PurseLoad:
    """A new load, written at once (its serial is claimed in the serial space first)."""
    session.add(row)
    await session.flush()
    return row


async def by_serial(
    session: AsyncSession, terminal_no: str, terminal_serial: int, *, for_update: bool = False
) -> PurseLoad | None:
    stmt = select(PurseLoad).where(
        PurseLoad.terminal_no == terminal_no, PurseLoad.terminal_serial == terminal_serial
    )
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
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
        # Re-read under the lock: a row this session read before may have changed meanwhile.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return list((await session.execute(stmt)).scalars())


async def host_datetimes_at(session: AsyncSession, asn: str, online_counter: int) -> set[str]:
    """The host date-times already given to MAC2 of this card at this online counter."""
    stmt = select(PurseLoad.host_datetime).where(
        PurseLoad.asn == asn,
        PurseLoad.online_counter == online_counter,
        PurseLoad.host_datetime.is_not(None),
    )
    return {str(x) for x in (await session.execute(stmt)).scalars()}


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


async def pending_unaged(
    session: AsyncSession, created_before: datetime, limit: int = 500
) -> list[PurseLoad]:
    """Pending loads made before ``created_before`` that have not opened their ageing break,
    locked (skipping rows a request about the card holds: the next run takes them)."""
    stmt = (
        select(PurseLoad)
        .where(
            PurseLoad.status == LoadStatus.pending,
            PurseLoad.aged_at.is_(None),
            PurseLoad.created_at <= created_before,
        )
        .order_by(PurseLoad.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())
