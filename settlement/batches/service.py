"""The payees' batches for the nightly settlement's steps (docs/settlement.md "Carried
batches", docs/bills.md §8): merchants' and billers' go through the same rules; the table says
whose. Services never commit: the run's units of work do."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from settlement.batches import repository
from settlement.batches.repository import BILLERS, MERCHANTS, BatchTotals, DueBatch, Table

__all__ = ["BILLERS", "MERCHANTS", "BatchTotals", "DueBatch", "Table"]


async def due_batches(session: AsyncSession, table: Table, day: date, limit: int) -> list[DueBatch]:
    return await repository.due_batches(session, table, day, limit)


async def mark_posted(
    session: AsyncSession, table: Table, day: date, payee: str, values: dict[str, Any]
) -> None:
    await repository.mark_posted(session, table, day, payee, values)


async def mark_carried(session: AsyncSession, table: Table, day: date, payee: str) -> None:
    await repository.mark_carried(session, table, day, payee)


async def batch_totals(session: AsyncSession, table: Table, day: date) -> BatchTotals:
    return await repository.batch_totals(session, table, day)


async def unbalanced_batches(session: AsyncSession, table: Table, day: date) -> int:
    return await repository.unbalanced_batches(session, table, day)
