"""Jobs of online authorization: releasing expired pre-authorization holds."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc.db import unit_of_work
from cardsvc.jobs.worker import Job
from cardsvc.resources import Storage
from terminals.online import service


async def expire_holds(
    sessions: async_sessionmaker[AsyncSession], *, now: datetime | None = None
) -> int:
    """One unit of work: expire due pre-authorizations and their ledger holds; return the count."""
    async with unit_of_work(sessions) as session:
        return await service.expire_preauths(session, now=now)


async def _expire_holds_job(storage: Storage, now: datetime) -> str:
    count = await expire_holds(storage.sessions, now=now)
    return f"released {count} expired pre-authorization hold(s)"


EXPIRE_HOLDS = Job(
    "expire-holds", lambda s: s.worker_hold_expiry_interval_seconds, _expire_holds_job
)
