"""SQL of personalization jobs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.personalization.models import PersoJob


async def for_application(
    session: AsyncSession, application_id: int, *, for_update: bool = False
) -> PersoJob | None:
    stmt = select(PersoJob).where(PersoJob.application_id == application_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def add(session: AsyncSession, job: PersoJob) -> PersoJob:
    session.add(job)
    await session.flush()
    return job
