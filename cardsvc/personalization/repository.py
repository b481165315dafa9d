"""SQL of personalization sessions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.personalization.models import PersoJob, PersoStatus

LIVE = (PersoStatus.running, PersoStatus.failed)


async def get(session: AsyncSession, job_id: int) -> PersoJob | None:
    return await session.get(PersoJob, job_id)


async def for_application(
    session: AsyncSession, application_id: int, *, for_update: bool = False
) -> PersoJob | None:
    stmt = select(PersoJob).where(PersoJob.application_id == application_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def live_with_chip(session: AsyncSession, chip_serial: str) -> PersoJob | None:
    """The unfinished session that holds this chip, if any."""
    stmt = select(PersoJob).where(PersoJob.chip_serial == chip_serial, PersoJob.status.in_(LIVE))
    return (await session.execute(stmt.limit(1))).scalar_one_or_none()


async def add(session: AsyncSession, job: PersoJob) -> PersoJob:
    session.add(job)
    await session.flush()
    return job


async def advance(session: AsyncSession, job_id: int, seq: int, **values: Any) -> bool:
    """Store the outcome of batch ``seq`` only if no other request stored one first (the batch
    number is the guard: no row is locked while the HSM works)."""
    result = await session.execute(
        update(PersoJob)
        .where(PersoJob.id == job_id, PersoJob.seq == seq)
        .values(seq=seq + 1, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
