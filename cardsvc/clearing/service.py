"""The open clearing date (DESIGN §5, §11; reference/settlement_hsm.md §1.2 日切).

Exactly one business day is open at a time. Acceptances take the open day; settlement moves a
day to ``closing`` and then ``closed``, which opens the next day, so records accepted during the
night go to D+1. When nothing is open yet the local date (Asia/Shanghai) is opened.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.clearing import repository
from cardsvc.clearing.models import DayStatus
from cardsvc.errors import InvalidStateTransition, NotFound

LOCAL_TZ = ZoneInfo("Asia/Shanghai")


def local_today(now: datetime | None = None) -> date:
    return (now or clock.now()).astimezone(LOCAL_TZ).date()


async def open_clearing_date(session: AsyncSession, now: datetime | None = None) -> date:
    """The open business day; opens today's local date (or the day after the last) if none is."""
    found = await repository.open_day(session)
    if found is not None:
        return found
    now = now or clock.now()
    latest = await repository.latest_date(session)
    day = local_today(now)
    if latest is not None and latest >= day:
        day = latest + timedelta(days=1)
    await repository.insert_open_if_absent(session, day, now)
    opened = await repository.open_day(session)
    if opened is None:  # pragma: no cover - another transaction closed it in between
        raise InvalidStateTransition("no clearing day could be opened")
    return opened


async def begin_closing(session: AsyncSession, day: date) -> None:
    row = await repository.get(session, day, for_update=True)
    if row is None:
        raise NotFound(f"clearing day {day} does not exist")
    if row.status is not DayStatus.open:
        raise InvalidStateTransition(f"clearing day {day} is {row.status}, not open")
    await repository.set_status(session, day, DayStatus.closing, None)
    await repository.insert_open_if_absent(session, day + timedelta(days=1), clock.now())


async def close_day(session: AsyncSession, day: date) -> date:
    """Close ``day`` and open ``day + 1``; returns the new open day."""
    now = clock.now()
    row = await repository.get(session, day, for_update=True)
    if row is None:
        raise NotFound(f"clearing day {day} does not exist")
    if row.status is DayStatus.closed:
        raise InvalidStateTransition(f"clearing day {day} is already closed")
    await repository.set_status(session, day, DayStatus.closed, now)
    nxt = day + timedelta(days=1)
    await repository.insert_open_if_absent(session, nxt, now)
    return nxt
