"""SQL of the clearing days."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.clearing.models import OPEN_DAY, ClearingDay, DayStatus
from cardsvc.sql import insert_ignore


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


async def set_status(session: AsyncSession, day: date, status: DayStatus, now: datetime) -> int:
    values: dict[str, object] = {"status": status}
    if status is DayStatus.closing:
        values["cut_at"] = now
    if status is DayStatus.closed:
        values["closed_at"] = now
    result = await session.execute(
        update(ClearingDay).where(ClearingDay.clearing_date == day).values(values)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def dates_with_status(session: AsyncSession, status: DayStatus) -> list[date]:
    stmt = (
        select(ClearingDay.clearing_date)
        .where(ClearingDay.status == status)
        .order_by(ClearingDay.clearing_date)
    )
    return list((await session.execute(stmt)).scalars())


async def server_clock(session: AsyncSession) -> datetime:
    """The database server's clock now (PostgreSQL), the clock ``pg_stat_activity`` uses."""
    value: datetime = (await session.execute(text("SELECT clock_timestamp()"))).scalar_one()
    return value


async def transactions_started_before(
    session: AsyncSession, moment: datetime
) -> list[dict[str, Any]]:
    """Other client transactions on this database that began before ``moment`` and are still open
    (PostgreSQL; the role needs to see other sessions: the same role, or ``pg_read_all_stats``)."""
    rows = await session.execute(
        text(
            "SELECT pid, application_name, state, xact_start FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' AND xact_start < :moment "
            "ORDER BY xact_start"
        ),
        {"moment": moment},
    )
    return [dict(row._mapping) for row in rows]


async def list_days(session: AsyncSession, limit: int = 30) -> list[ClearingDay]:
    """The latest days, newest first."""
    stmt = select(ClearingDay).order_by(ClearingDay.clearing_date.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())
