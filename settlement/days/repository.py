"""All SQL of the days pages: clearing days with their settlement run, and what the nightly
settlement stored for them (lines, batches, steps). Read only; every statement is bound to a
range of clearing dates or to one date."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.bills.models import Biller
from cardsvc.clearing.models import ClearingDay, DayStatus
from settlement.billers.models import BillerBatch
from settlement.billrecon.models import BillReconciliation, ReconStatus
from settlement.nightly.models import (
    BatchStatus,
    RunStatus,
    SettlementBatch,
    SettlementLine,
    SettlementRun,
    SettlementStep,
)
from settlement.payouts.models import PayoutStatus, SettlementPayout
from terminals.registry.models import Merchant


async def count_days(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(ClearingDay))).scalar_one())


async def latest_day(session: AsyncSession) -> date | None:
    found = (await session.execute(select(func.max(ClearingDay.clearing_date)))).scalar_one()
    return found if isinstance(found, date) else None


async def days(
    session: AsyncSession, *, offset: int, limit: int
) -> list[tuple[date, DayStatus, RunStatus | None, int | None, str | None]]:
    """A page of clearing days, newest first: (date, day status, run status, attempts, error)."""
    stmt = (
        select(
            ClearingDay.clearing_date,
            ClearingDay.status,
            SettlementRun.status,
            SettlementRun.attempts,
            SettlementRun.error,
        )
        .outerjoin(SettlementRun, SettlementRun.clearing_date == ClearingDay.clearing_date)
        .order_by(ClearingDay.clearing_date.desc())
        .offset(offset)
        .limit(limit)
    )
    return [tuple(row) for row in (await session.execute(stmt)).all()]  # type: ignore[misc]


async def line_totals(
    session: AsyncSession, first: date, last: date
) -> dict[date, tuple[int, int, int]]:
    """Per clearing date in [first, last]: (merchants, count, gross) of its lines."""
    line = SettlementLine
    stmt = (
        select(
            line.clearing_date,
            func.count(func.distinct(line.merchant_no)),
            func.coalesce(func.sum(line.count), 0),
            func.coalesce(func.sum(line.gross), 0),
        )
        .where(line.clearing_date >= first, line.clearing_date <= last)
        .group_by(line.clearing_date)
    )
    return {d: (int(m), int(c), int(g)) for d, m, c, g in (await session.execute(stmt)).all()}


async def batch_totals(
    session: AsyncSession, first: date, last: date
) -> dict[date, tuple[int, int, int, int]]:
    """Per clearing date in [first, last]: (batches, posted batches, fee, net)."""
    b = SettlementBatch
    stmt = (
        select(
            b.clearing_date,
            func.count(),
            func.count().filter(b.status == BatchStatus.posted),
            func.coalesce(func.sum(b.fee), 0),
            func.coalesce(func.sum(b.net), 0),
        )
        .where(b.clearing_date >= first, b.clearing_date <= last)
        .group_by(b.clearing_date)
    )
    return {
        d: (int(n), int(p), int(f), int(net)) for d, n, p, f, net in (await session.execute(stmt))
    }


async def volume(
    session: AsyncSession, first: date, last: date
) -> list[tuple[date, str, int, int]]:
    """(date, class, count, gross) per clearing date and transaction class in [first, last]."""
    line = SettlementLine
    stmt = (
        select(
            line.clearing_date,
            line.tx_class,
            func.coalesce(func.sum(line.count), 0),
            func.coalesce(func.sum(line.gross), 0),
        )
        .where(line.clearing_date >= first, line.clearing_date <= last)
        .group_by(line.clearing_date, line.tx_class)
        .order_by(line.clearing_date, line.tx_class)
    )
    return [(d, c, int(n), int(g)) for d, c, n, g in (await session.execute(stmt)).all()]


async def clearing_day(session: AsyncSession, day: date) -> ClearingDay | None:
    stmt = select(ClearingDay).where(ClearingDay.clearing_date == day)
    return (await session.execute(stmt)).scalar_one_or_none()


async def run_of(session: AsyncSession, day: date) -> SettlementRun | None:
    stmt = select(SettlementRun).where(SettlementRun.clearing_date == day)
    return (await session.execute(stmt)).scalar_one_or_none()


async def steps_of(session: AsyncSession, day: date) -> Sequence[SettlementStep]:
    stmt = select(SettlementStep).where(SettlementStep.clearing_date == day)
    return (await session.execute(stmt)).scalars().all()


async def class_totals(session: AsyncSession, day: date) -> list[tuple[str, int, int, int, int]]:
    """(class, merchants, count, gross, fee) of the day per transaction class."""
    line = SettlementLine
    stmt = (
        select(
            line.tx_class,
            func.count(),
            func.coalesce(func.sum(line.count), 0),
            func.coalesce(func.sum(line.gross), 0),
            func.coalesce(func.sum(line.fee), 0),
        )
        .where(line.clearing_date == day)
        .group_by(line.tx_class)
        .order_by(line.tx_class)
    )
    return [(c, int(m), int(n), int(g), int(f)) for c, m, n, g, f in await session.execute(stmt)]


async def count_merchants(session: AsyncSession, day: date) -> int:
    stmt = select(func.count()).where(SettlementBatch.clearing_date == day)
    return int((await session.execute(stmt)).scalar_one())


async def merchant_batches(
    session: AsyncSession, day: date, *, offset: int, limit: int
) -> list[tuple[str, str, int, int, int, int, BatchStatus]]:
    """A page of the day's batches in merchant-number order, with the merchant's name:
    (merchant_no, name, count, gross, fee, net, status)."""
    b = SettlementBatch
    stmt = (
        select(b.merchant_no, Merchant.name, b.count, b.gross, b.fee, b.net, b.status)
        .join(Merchant, Merchant.id == b.merchant_id)
        .where(b.clearing_date == day)
        .order_by(b.merchant_no)
        .offset(offset)
        .limit(limit)
    )
    return [tuple(row) for row in (await session.execute(stmt)).all()]  # type: ignore[misc]


async def lines_of(
    session: AsyncSession, day: date, merchant_nos: Sequence[str]
) -> list[tuple[str, str, int, int, int]]:
    """The lines of the merchants named: (merchant_no, class, count, gross, fee)."""
    if not merchant_nos:
        return []
    line = SettlementLine
    stmt = (
        select(line.merchant_no, line.tx_class, line.count, line.gross, line.fee)
        .where(line.clearing_date == day, line.merchant_no.in_(list(merchant_nos)))
        .order_by(line.merchant_no, line.tx_class)
    )
    return [(m, c, int(n), int(g), int(f)) for m, c, n, g, f in await session.execute(stmt)]


BillerRow = tuple[
    str,
    str,
    int,
    int,
    int,
    int,
    int,
    BatchStatus,
    str | None,
    int | None,
    PayoutStatus | None,
    ReconStatus | None,
    int | None,
]


async def biller_batches(session: AsyncSession, day: date) -> list[BillerRow]:
    """The day's biller batches in code order, each with the biller's name, the payout that paid
    it and the day's reconciliation with the biller: (code, name, count, payments, gross, fee,
    net, status, payout reference, payout amount, payout status, reconciliation status,
    disagreements)."""
    b, o, r = BillerBatch, SettlementPayout, BillReconciliation
    stmt = (
        select(
            b.biller_code, Biller.name, b.count, b.payments, b.gross, b.fee, b.net, b.status,
            b.payout_reference, o.amount, o.status, r.status, r.disagreements,
        )
        .join(Biller, Biller.code == b.biller_code)
        .outerjoin(o, o.reference == b.payout_reference)
        .outerjoin(r, (r.clearing_date == b.clearing_date) & (r.biller_code == b.biller_code))
        .where(b.clearing_date == day)
        .order_by(b.biller_code)
    )  # fmt: skip
    return [tuple(row) for row in (await session.execute(stmt)).all()]
