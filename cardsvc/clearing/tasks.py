"""The day-cut job (``cardsvc worker``, job ``day-cut``): closes the days whose cutoff has passed,
oldest first, and keeps the daily partitions made ahead of the open day."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.clearing import partitions, service
from cardsvc.db import create_engine, session_factory
from cardsvc.jobs.worker import Job
from cardsvc.resources import Storage
from cardsvc.settings import Settings


async def cut_days(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, now: datetime
) -> str:
    result = await service.cut_due(sessions, settings, now)
    first = result.open_day or service.business_date(settings, now)
    made = await partitions.ensure_days(
        sessions, first, first + timedelta(days=settings.partitions_ahead_days)
    )
    closed = ", ".join(day.isoformat() for day in result.closed) or "none"
    open_day = result.open_day.isoformat() if result.open_day else "none yet"
    return f"closed {closed}; open day {open_day}; {len(made)} partition(s) made"


async def prepare_partitions(settings: Settings) -> list[str]:
    """The partitions of yesterday through the days ahead (``cardsvc serve`` and ``db upgrade``
    run it after the migrations, so that the first day ever opened has its partition)."""
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        today = service.business_date(settings, clock.now())
        return await partitions.ensure_days(
            session_factory(engine),
            today - timedelta(days=1),
            today + timedelta(days=settings.partitions_ahead_days),
        )
    finally:
        await engine.dispose()


async def _day_cut_job(storage: Storage, now: datetime) -> str:
    return await cut_days(storage.sessions, storage.settings, now)


DAY_CUT = Job("day-cut", lambda s: s.worker_day_cut_interval_seconds, _day_cut_job)
