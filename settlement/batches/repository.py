"""All SQL of the payees' batches, one statement per question for either table: a merchant's
batches (``settlement_batches``) and a biller's (``biller_batches``) have the same shape, a
payee column and a way to tell a carried batch already settled (:class:`Table`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from settlement.billers.models import BillerBatch
from settlement.nightly.models import BatchStatus, SettlementBatch


@dataclass(frozen=True, slots=True)
class Table:
    """A batches table: its ORM class, its payee column, and the column that is set on a carried
    batch once the posting of a later due batch settled it."""

    model: Any
    payee: InstrumentedAttribute[str]
    settled: InstrumentedAttribute[Any]


MERCHANTS = Table(
    SettlementBatch, SettlementBatch.merchant_no, SettlementBatch.ledger_transaction_id
)
# A biller's settlement may post nothing (fees of 0), so its carried batches are marked settled
# by the day that settled them rather than by a transaction.
BILLERS = Table(BillerBatch, BillerBatch.biller_code, BillerBatch.settled_on)


@dataclass(frozen=True, slots=True)
class DueBatch:
    """A due batch of the day with what the payee's carried batches of earlier days bring
    forward (zero or negative net): the settlement takes both, or neither."""

    payee: str
    gross: int
    fee: int
    net: int
    carry_gross: int = 0
    carry_fee: int = 0
    carry_net: int = 0

    @property
    def total_gross(self) -> int:
        return self.gross + self.carry_gross

    @property
    def total_fee(self) -> int:
        return self.fee + self.carry_fee

    @property
    def total_net(self) -> int:
        return self.net + self.carry_net

    @property
    def postable(self) -> bool:
        # The rule of a due batch, applied to the day together with what it carries.
        return self.total_gross > 0 and self.total_net >= 0


def _carried_before(table: Table, day: date) -> ColumnElement[bool]:
    """Carried batches of days before ``day`` that no settlement has taken yet."""
    c = table.model
    return and_(c.status == BatchStatus.carried, table.settled.is_(None), c.clearing_date < day)


async def due_batches(session: AsyncSession, table: Table, day: date, limit: int) -> list[DueBatch]:
    """The day's due batches in payee order (locked), at most ``limit``, each with the sums of
    its payee's carried batches before it."""
    b = table.model
    stmt = (
        select(table.payee, b.gross, b.fee, b.net)
        .where(b.clearing_date == day, b.status == BatchStatus.due)
        .order_by(table.payee)
        .limit(limit)
        .with_for_update()
    )
    due = [DueBatch(*row) for row in (await session.execute(stmt)).all()]
    if not due:
        return []
    carry_stmt = (
        select(table.payee, func.sum(b.gross), func.sum(b.fee), func.sum(b.net))
        .where(_carried_before(table, day), table.payee.in_([d.payee for d in due]))
        .group_by(table.payee)
    )
    carry = {
        str(m): (int(g), int(f), int(n)) for m, g, f, n in (await session.execute(carry_stmt)).all()
    }
    return [DueBatch(d.payee, d.gross, d.fee, d.net, *carry.get(d.payee, (0, 0, 0))) for d in due]


async def mark_posted(
    session: AsyncSession, table: Table, day: date, payee: str, values: dict[str, Any]
) -> None:
    """The day's batch is settled (status ``posted``, with ``values``); the payee's carried
    batches before it are settled by the same settlement (they keep status ``carried`` and get
    the same ``values``)."""
    b = table.model
    await session.execute(
        update(b)
        .where(_carried_before(table, day), table.payee == payee)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(b)
        .where(b.clearing_date == day, table.payee == payee)
        .values(status=BatchStatus.posted, **values)
    )


async def mark_carried(session: AsyncSession, table: Table, day: date, payee: str) -> None:
    """A due batch whose day, with what it carries, is still not positive: carried further."""
    b = table.model
    await session.execute(
        update(b)
        .where(b.clearing_date == day, table.payee == payee)
        .values(status=BatchStatus.carried)
    )


@dataclass(frozen=True, slots=True)
class BatchTotals:
    batches: int
    gross: int
    fee: int
    net: int
    due: int
    posted: int
    posted_gross: int


async def batch_totals(session: AsyncSession, table: Table, day: date) -> BatchTotals:
    b = table.model
    stmt = select(
        func.count(),
        func.coalesce(func.sum(b.gross), 0),
        func.coalesce(func.sum(b.fee), 0),
        func.coalesce(func.sum(b.net), 0),
        func.count().filter(b.status == BatchStatus.due),
        func.count().filter(b.status == BatchStatus.posted),
        func.coalesce(func.sum(b.gross).filter(b.status == BatchStatus.posted), 0),
    ).where(b.clearing_date == day)
    row = (await session.execute(stmt)).one()
    return BatchTotals(*(int(v) for v in row))


async def unbalanced_batches(session: AsyncSession, table: Table, day: date) -> int:
    """The day's batches whose gross is not their net and fee (a database constraint holds it;
    the day's money check asks all the same)."""
    b = table.model
    stmt = select(func.count()).where(b.clearing_date == day, b.gross != b.net + b.fee)
    return int((await session.execute(stmt)).scalar_one())
