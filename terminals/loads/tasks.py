"""Jobs of purse loads: pending loads without card evidence age into break items."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc.db import unit_of_work
from cardsvc.jobs.worker import Job
from cardsvc.resources import Storage
from cardsvc.settings import Settings
from terminals.loads import service


async def age_pending_loads(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, now: datetime
) -> int:
    """One unit of work per batch of aged loads; how many opened their break."""
    total = 0
    while True:
        async with unit_of_work(sessions) as session:
            aged = await service.age_pending_loads(session, settings, now)
        total += aged
        if aged == 0:
            return total


async def _age_loads_job(storage: Storage, now: datetime) -> str:
    count = await age_pending_loads(storage.sessions, storage.settings, now)
    return f"{count} pending load(s) without card evidence opened an aged_load break"


AGE_LOADS = Job("age-loads", lambda s: s.worker_load_ageing_interval_seconds, _age_loads_job)
