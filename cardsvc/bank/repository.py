"""SQL of bank credits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.bank.models import BankCredit, CreditStatus
from cardsvc.sql import insert_ignore_stmt


async def claim(session: AsyncSession, values: dict[str, Any]) -> BankCredit | None:
    """Insert a credit and return it (tracked); None when its (bank, reference) exists. A
    concurrent twin waits for the first to commit and then inserts nothing."""
    table = BankCredit.__table__
    stmt = insert_ignore_stmt(session, table).values(**values).returning(table.c.id)
    new_id = (await session.execute(stmt)).scalar()
    return None if new_id is None else await session.get(BankCredit, int(new_id))


async def by_reference(session: AsyncSession, bank_code: str, reference: str) -> BankCredit | None:
    stmt = select(BankCredit).where(
        BankCredit.bank_code == bank_code, BankCredit.bank_reference == reference
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get(
    session: AsyncSession, credit_id: int, *, for_update: bool = False
) -> BankCredit | None:
    stmt = select(BankCredit).where(BankCredit.id == credit_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def listing(
    session: AsyncSession, *, status: CreditStatus | None, after_id: int, limit: int
) -> list[BankCredit]:
    stmt = select(BankCredit).where(BankCredit.id > after_id).order_by(BankCredit.id).limit(limit)
    if status is not None:
        stmt = stmt.where(BankCredit.status == status)
    return list((await session.execute(stmt)).scalars())
