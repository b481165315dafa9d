"""SQL of card applications."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.applications.models import OPEN_STATUSES, Application


async def get(
    session: AsyncSession, application_id: int, *, for_update: bool = False
) -> Application | None:
    stmt = select(Application).where(Application.id == application_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def open_for_resident(session: AsyncSession, resident_id: int) -> Application | None:
    stmt = select(Application).where(
        Application.resident_id == resident_id, Application.status.in_(OPEN_STATUSES)
    )
    return (await session.execute(stmt)).scalars().first()


async def add(session: AsyncSession, application: Application) -> Application:
    session.add(application)
    await session.flush()
    return application


async def list_by_status(
    session: AsyncSession, status: str | None, limit: int = 100
) -> list[Application]:
    stmt = select(Application).order_by(Application.id.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(Application.status == status)
    return list((await session.execute(stmt)).scalars())
