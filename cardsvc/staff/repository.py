"""SQL of the staff domain."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.staff.models import StaffUser


async def get(session: AsyncSession, staff_id: int) -> StaffUser | None:
    return await session.get(StaffUser, staff_id)


async def by_username(
    session: AsyncSession, username: str, *, for_update: bool = False
) -> StaffUser | None:
    stmt = select(StaffUser).where(StaffUser.username == username)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def add(session: AsyncSession, user: StaffUser) -> StaffUser:
    session.add(user)
    await session.flush()
    return user


async def list_all(session: AsyncSession) -> list[StaffUser]:
    return list((await session.execute(select(StaffUser).order_by(StaffUser.id))).scalars())
