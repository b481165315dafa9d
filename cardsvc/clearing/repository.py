"""SQL of the clearing days."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.clearing.models import ClearingDay, DayStatus
from cardsvc.sql import insert_ignore

# The open business day (the earliest, should two ever be open); other repositories embed it as a
# scalar subquery to read it in the same round trip as what they need.
OPEN_DAY = (
    select(ClearingDay.clearing_date)
    .where(ClearingDay.status == DayStatus.open)
    .order_by(ClearingDay.clearing_date)
    .limit(1)
)


async def open_day(session: AsyncSession) -> date | None:
    found: date | None = (await session.execute(OPEN_DAY)).scalar_one_or_none()
    return found


async def latest_date(session: AsyncSession) -> date | None:
    latest: date | None = (
        await session.execute(select(func.max(ClearingDay.clearing_date)))
    ).scalar_one()
    return latest


async def get(session: AsyncSession, day: date, *, for_update: bool = False) -> ClearingDay | None:
    stmt = select(ClearingDay).where(ClearingDay.clearing_date == day)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def insert_open_if_absent(session: AsyncSession, day: date, now: datetime) -> None:
    """Insert ``day`` as open unless a row exists (two requests may race to open the first day)."""
    values = {
        "clearing_date": day,
        "status": DayStatus.open.value,
        "opened_at": now,
        "closed_at": None,
    }
    await insert_ignore(session, ClearingDay.__table__, values)


async def set_status(
    session: AsyncSession, day: date, status: DayStatus, now: datetime | None
) -> int:
    values: dict[str, object] = {"status": status}
    if status is DayStatus.closed:
        values["closed_at"] = now
    result = await session.execute(
        update(ClearingDay).where(ClearingDay.clearing_date == day).values(values)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def list_days(session: AsyncSession, limit: int = 30) -> list[ClearingDay]:
    stmt = select(ClearingDay).order_by(ClearingDay.clearing_date.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())
