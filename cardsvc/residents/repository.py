"""SQL of residents."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.residents.models import Resident


async def get(session: AsyncSession, resident_id: int) -> Resident | None:
    return await session.get(Resident, resident_id)


async def by_index(session: AsyncSession, id_index: str) -> Resident | None:
    return (
        await session.execute(select(Resident).where(Resident.id_index == id_index))
    ).scalar_one_or_none()


async def add(session: AsyncSession, resident: Resident) -> Resident:
    session.add(resident)
    await session.flush()
    return resident
