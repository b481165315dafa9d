"""The clearing date and the day cut (日切) (DESIGN §5, §11; reference/settlement_hsm.md §1.2).

**One rule.** Everything that moves money (an accepted offline record, an online message, a
load, a balance release, a settlement posting) takes its clearing date from
:func:`clearing_date`, inside the database transaction that writes it, once per transaction:
the first answer is kept for the rest of that transaction, so a writer in flight at the cut lands
wholly on one day. The date is the earliest *open* business day; when no day was ever opened, the
business day of the moment (below) is opened.

**The cut.** :func:`cut_due` closes every open day whose cutoff has passed, oldest first, so days
missed while nothing ran are caught up in order. Closing day D is three steps, each resumable:

1. one transaction marks D ``closing`` and opens D+1: from its commit every new transaction
   takes D+1, and D is never handed out again;
2. the fence: wait until every other database transaction that was open at that commit has
   ended (PostgreSQL ``pg_stat_activity``): those are the only ones that can have taken D, and
   each lands wholly on D because it commits with the date it read. SQLite serializes writers,
   so no transaction can be open across the first step;
3. mark D ``closed``. Nothing is ever accepted onto a closed day.

Acceptances pay nothing for the fence: they read the open day as before, without a lock. A
transaction that stays open through the wait (a stuck client, a long report on the same database)
makes the cut fail with :class:`DayCutBlocked` naming it; D stays ``closing`` (acceptances go to
D+1 meanwhile) and the next attempt resumes at step 2.

The business day of a moment is its local date shifted by the cutoff: a cutoff before noon ends
day D the next morning (02:00: a ride at 01:30 belongs to D), a cutoff from noon ends it the same
evening (23:00: a ride at 23:30 belongs to D+1).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.clearing import repository
from cardsvc.clearing.models import DayStatus
from cardsvc.db import unit_of_work
from cardsvc.errors import Conflict, InvalidStateTransition, NotFound
from cardsvc.logging import get_logger
from cardsvc.settings import Settings

log = get_logger(__name__)

_INFO_KEY = "clearing.date"


class DayCutBlocked(Conflict):
    """A database transaction stayed open through the day cut's wait; the day stays closing."""


def cutoff_offset(settings: Settings) -> timedelta:
    """How far the business day lags the calendar (negative: it runs ahead of it)."""
    hours, minutes = (int(part) for part in settings.day_cutoff.split(":"))
    offset = timedelta(hours=hours, minutes=minutes)
    return offset if offset < timedelta(hours=12) else offset - timedelta(days=1)


def business_date(settings: Settings, now: datetime | None = None) -> date:
    """The business day a moment belongs to, by the calendar and the cutoff."""
    local = (now or clock.now()).astimezone(settings.zone)
    return (local - cutoff_offset(settings)).date()


def cut_moment(settings: Settings, day: date) -> datetime:
    """When day ``day`` is due to be closed (an aware datetime)."""
    start_of_next = datetime(day.year, day.month, day.day, tzinfo=settings.zone) + timedelta(days=1)
    return start_of_next + cutoff_offset(settings)


# --- the clearing date ----------------------------------------------------------------------


async def clearing_date(
    session: AsyncSession,
    settings: Settings,
    *,
    now: datetime | None = None,
    seen: date | None = None,
) -> date:
    """The clearing date of whatever this transaction writes (see the module docstring).

    ``seen`` is the open day a statement of this same transaction already read (a repository may
    fold the read into a statement it needs anyway, ``cardsvc.clearing.models.OPEN_DAY``); it is used instead
    of another read. The first answer in a transaction is the answer for the whole transaction.
    """
    cached = session.info.get(_INFO_KEY)
    transaction = session.get_transaction()
    if cached is not None and transaction is not None and cached[0] is transaction:
        day: date = cached[1]
        return day
    day = seen if seen is not None else await _read(session, settings, now or clock.now())
    session.info[_INFO_KEY] = (session.get_transaction(), day)
    return day


async def _read(session: AsyncSession, settings: Settings, now: datetime) -> date:
    found = await repository.open_day(session)
    if found is not None:
        return found
    # No day is open: the first one ever (a cut always opens the next day with the closing).
    latest = await repository.latest_date(session)
    day = business_date(settings, now)
    if latest is not None and latest >= day:
        day = latest + timedelta(days=1)
    await repository.insert_open_if_absent(session, day, now)
    opened = await repository.open_day(session)
    if opened is None:  # pragma: no cover - another transaction closed it in between
        raise InvalidStateTransition("no clearing day could be opened")
    return opened


# --- the day cut ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CutResult:
    closed: list[date]
    open_day: date | None


async def cut_due(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, now: datetime | None = None
) -> CutResult:
    """Close every day whose cutoff has passed, oldest first (missed days caught up in order)."""
    now = now or clock.now()
    closed: list[date] = []
    resumed = await _closing_days(sessions)
    for day in resumed:
        await close_day(sessions, settings, day)
        closed.append(day)
    while True:
        async with sessions() as session:
            open_day = await repository.open_day(session)
        if open_day is None or cut_moment(settings, open_day) > now:
            return CutResult(closed, open_day)
        await close_day(sessions, settings, open_day)
        closed.append(open_day)


async def _closing_days(sessions: async_sessionmaker[AsyncSession]) -> list[date]:
    async with sessions() as session:
        return await repository.dates_with_status(session, DayStatus.closing)


async def close_through(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, day: date
) -> list[date]:
    """Close every day up to and including ``day`` that is not closed yet, oldest first (a manual
    cut, before the cutoff: ``cardsvc settlement run`` on an open day). Returns those closed."""
    closed: list[date] = []
    for pending in await _closing_days(sessions):
        if pending <= day:
            await close_day(sessions, settings, pending)
            closed.append(pending)
    while True:
        async with sessions() as session:
            first = await repository.open_day(session)
            row = await repository.get(session, day)
        if row is None:
            if first is not None and first > day:
                return closed  # nothing was ever open on that day: it has no records
            raise NotFound(f"clearing day {day} has not been opened yet")
        if first is None or first > day:
            return closed
        await close_day(sessions, settings, first)
        closed.append(first)


async def close_day(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, day: date
) -> date:
    """Close ``day`` and open the next (steps 1-3 of the module docstring); returns the next day.

    Idempotent: a day already closed is left alone, a closing one resumes at the wait.
    """
    from cardsvc.clearing import partitions

    nxt = day + timedelta(days=1)
    # The next day's partition before it opens (usually made days ahead: nothing to do).
    await partitions.ensure_days(sessions, nxt, nxt)
    async with unit_of_work(sessions) as session:
        row = await repository.get(session, day, for_update=True)
        if row is None:
            raise NotFound(f"clearing day {day} does not exist")
        status = row.status
        if status is DayStatus.closed:
            return nxt
        if status is DayStatus.open:
            now = clock.now()
            await repository.set_status(session, day, DayStatus.closing, now)
            await repository.insert_open_if_absent(session, nxt, now)
    await wait_for_older_transactions(sessions, settings)
    async with unit_of_work(sessions) as session:
        await repository.set_status(session, day, DayStatus.closed, clock.now())
    log.info("clearing.day_closed", clearing_date=day.isoformat(), open_day=nxt.isoformat())
    await partitions.ensure_days(
        sessions, nxt, nxt + timedelta(days=settings.partitions_ahead_days)
    )
    return nxt


async def wait_for_older_transactions(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Return once every other transaction open now has ended (the fence of the day cut)."""
    async with sessions() as session:
        if session.get_bind().dialect.name != "postgresql":
            return  # SQLite: writers are serialized, nothing was open across the commit
        started = await repository.server_clock(session)
        await session.commit()
        deadline = time.monotonic() + settings.day_cut_wait_seconds
        delay = 0.01
        while True:
            blockers = await repository.transactions_started_before(session, started)
            await session.commit()
            if not blockers:
                return
            if time.monotonic() >= deadline:
                raise DayCutBlocked(
                    "the day cut waited "
                    f"{settings.day_cut_wait_seconds} s for transactions open before it: "
                    + "; ".join(_describe(b) for b in blockers[:5]),
                    transactions=len(blockers),
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)


def _describe(blocker: dict[str, Any]) -> str:
    return (
        f"pid {blocker['pid']} ({blocker['application_name'] or 'no application name'}, "
        f"{blocker['state']}) open since {blocker['xact_start'].isoformat()}"
    )
