"""SQL of bills."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.bills.models import Biller, BillerStatus


async def biller_by_code(
    session: AsyncSession, code: str, *, for_update: bool = False
) -> Biller | None:
    stmt = select(Biller).where(Biller.code == code)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def billers(session: AsyncSession, *, status: BillerStatus | None) -> list[Biller]:
    stmt = select(Biller).order_by(Biller.code)
    if status is not None:
        stmt = stmt.where(Biller.status == status)
    return list((await session.execute(stmt)).scalars())
