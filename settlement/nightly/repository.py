"""All SQL of the nightly settlement. The day's work is done by aggregation in the database
(``INSERT ... SELECT ... GROUP BY``): bound to one clearing date, each statement reads one
partition of the records and of the journal on PostgreSQL; nothing loads the day into Python.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import and_, case, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.ledger.models import AccountKind, LedgerAccount, LedgerLine, LedgerTransaction, Side
from settlement.nightly.models import (
    BatchStatus,
    RunStatus,
    SettlementBatch,
    SettlementLine,
    SettlementRun,
    SettlementStep,
    Step,
)
from terminals.registry.models import Merchant
from terminals.uploads.models import CLAIMING_CODES, OfflineRecord

OFFLINE_CLASS = "offline"
# Ledger transaction types that reach a merchant's pending account but are not the day's trade:
# the offline batches (cleared record by record from the records instead) and settlement itself.
NOT_TRADE = ("purchase_batch", "settlement")

# --- runs and steps -------------------------------------------------------------------------


async def get_run(
    session: AsyncSession, day: date, *, for_update: bool = False
) -> SettlementRun | None:
    stmt = select(SettlementRun).where(SettlementRun.clearing_date == day)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_runs(session: AsyncSession, limit: int) -> Sequence[SettlementRun]:
    stmt = select(SettlementRun).order_by(SettlementRun.clearing_date.desc()).limit(limit)
    return (await session.execute(stmt)).scalars().all()


async def steps_of(session: AsyncSession, day: date) -> Sequence[SettlementStep]:
    stmt = select(SettlementStep).where(SettlementStep.clearing_date == day)
    return (await session.execute(stmt)).scalars().all()


async def record_step(
    session: AsyncSession,
    day: date,
    step: Step,
    *,
    rows: int,
    amount: int,
    detail: str,
    seconds: float,
    now: datetime,
) -> None:
    """Mark ``step`` done; a concurrent run that did it first makes this transaction fail."""
    await session.execute(
        insert(SettlementStep).values(
            clearing_date=day, step=step, rows=rows, amount=amount, detail=detail[:500],
            seconds=seconds, finished_at=now,
        )
    )  # fmt: skip
    await session.execute(
        update(SettlementRun)
        .where(SettlementRun.clearing_date == day)
        .values(last_step=step, updated_at=now)
    )


async def refresh_step(
    session: AsyncSession, day: date, step: Step, *, seconds: float, now: datetime
) -> None:
    await session.execute(
        update(SettlementStep)
        .where(SettlementStep.clearing_date == day, SettlementStep.step == step)
        .values(seconds=seconds, finished_at=now)
    )


# --- clear ----------------------------------------------------------------------------------


async def clear(session: AsyncSession, day: date) -> tuple[int, int]:
    """Write the day's lines per merchant and transaction class; returns (lines, gross total).

    Offline records are cleared from the records themselves (accepted and adjusted ones, by the
    clearing date of their upload); every other movement of a merchant's pending account (online
    purchases, completions, refunds) from the journal, by its transaction type.
    """
    r = OfflineRecord
    offline = (
        select(
            literal(day).label("clearing_date"),
            Merchant.merchant_no,
            literal(OFFLINE_CLASS).label("tx_class"),
            r.merchant_id,
            func.count().label("count"),
            func.coalesce(func.sum(r.amount), 0).label("gross"),
            literal(0).label("fee"),
        )
        .join(Merchant, Merchant.id == r.merchant_id)
        .where(r.clearing_date == day, r.result_code.in_(sorted(CLAIMING_CODES)))
        .group_by(Merchant.merchant_no, r.merchant_id)
    )
    columns = ["clearing_date", "merchant_no", "tx_class", "merchant_id", "count", "gross", "fee"]
    await session.execute(insert(SettlementLine).from_select(columns, offline))
    t, line, account = LedgerTransaction, LedgerLine, LedgerAccount
    signed = case((line.side == Side.credit, line.amount), else_=-line.amount)
    journal = (
        select(
            literal(day).label("clearing_date"),
            Merchant.merchant_no,
            t.tx_type,
            Merchant.id,
            func.count(func.distinct(t.id)).label("count"),
            func.sum(signed).label("gross"),
            literal(0).label("fee"),
        )
        .select_from(line)
        .join(account, account.id == line.account_id)
        .join(t, and_(t.id == line.transaction_id, t.clearing_date == day))
        .join(Merchant, Merchant.merchant_no == account.owner_ref)
        .where(
            line.clearing_date == day,
            account.kind == AccountKind.merchant_pending,
            t.tx_type.not_in(NOT_TRADE),
        )
        .group_by(Merchant.merchant_no, t.tx_type, Merchant.id)
    )
    await session.execute(insert(SettlementLine).from_select(columns, journal))
    return await line_totals(session, day)


async def line_totals(session: AsyncSession, day: date) -> tuple[int, int]:
    stmt = select(func.count(), func.coalesce(func.sum(SettlementLine.gross), 0)).where(
        SettlementLine.clearing_date == day
    )
    count, gross = (await session.execute(stmt)).one()
    return int(count), int(gross)


async def pending_trade_movement(session: AsyncSession, day: date) -> int:
    """The day's movement of every merchant's pending account, settlement postings left out."""
    t, line, account = LedgerTransaction, LedgerLine, LedgerAccount
    signed = case((line.side == Side.credit, line.amount), else_=-line.amount)
    stmt = (
        select(func.coalesce(func.sum(signed), 0))
        .select_from(line)
        .join(account, account.id == line.account_id)
        .join(t, and_(t.id == line.transaction_id, t.clearing_date == day))
        .where(
            line.clearing_date == day,
            account.kind == AccountKind.merchant_pending,
            t.tx_type != "settlement",
        )
    )
    return int((await session.execute(stmt)).scalar_one())


# --- batches and postings -------------------------------------------------------------------


async def make_batches(session: AsyncSession, day: date) -> tuple[int, int]:
    """One batch per merchant with lines on the day; returns (batches, total net)."""
    line = SettlementLine
    gross = func.sum(line.gross)
    fee = func.sum(line.fee)
    rows = (
        select(
            line.clearing_date,
            line.merchant_no,
            line.merchant_id,
            func.sum(line.count),
            gross,
            fee,
            gross - fee,
            # Fees above the gross (minimum fees on a day of refunds) would leave the payable
            # negative: such a day is carried like a day of refunds.
            case(
                (and_(gross > 0, gross - fee >= 0), BatchStatus.due.value),
                else_=BatchStatus.carried.value,
            ),
        )
        .where(line.clearing_date == day)
        .group_by(line.clearing_date, line.merchant_no, line.merchant_id)
    )
    columns = [
        "clearing_date", "merchant_no", "merchant_id", "count", "gross", "fee", "net", "status",
    ]  # fmt: skip
    await session.execute(insert(SettlementBatch).from_select(columns, rows))
    stmt = select(func.count(), func.coalesce(func.sum(SettlementBatch.net), 0)).where(
        SettlementBatch.clearing_date == day
    )
    count, net = (await session.execute(stmt)).one()
    return int(count), int(net)


@dataclass(frozen=True, slots=True)
class DueBatch:
    merchant_no: str
    gross: int
    fee: int
    net: int


async def due_batches(session: AsyncSession, day: date, limit: int) -> list[DueBatch]:
    b = SettlementBatch
    stmt = (
        select(b.merchant_no, b.gross, b.fee, b.net)
        .where(b.clearing_date == day, b.status == BatchStatus.due)
        .order_by(b.merchant_no)
        .limit(limit)
        .with_for_update()
    )
    return [DueBatch(*row) for row in (await session.execute(stmt)).all()]


async def mark_posted(
    session: AsyncSession, day: date, merchant_no: str, transaction_id: int
) -> None:
    await session.execute(
        update(SettlementBatch)
        .where(SettlementBatch.clearing_date == day, SettlementBatch.merchant_no == merchant_no)
        .values(status=BatchStatus.posted, ledger_transaction_id=transaction_id)
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


async def batch_totals(session: AsyncSession, day: date) -> BatchTotals:
    b = SettlementBatch
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


async def unbalanced_batches(session: AsyncSession, day: date) -> int:
    b = SettlementBatch
    stmt = select(func.count()).where(b.clearing_date == day, b.gross != b.net + b.fee)
    return int((await session.execute(stmt)).scalar_one())


# --- what the files show --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SummaryRow:
    merchant_no: str
    merchant_name: str
    tx_class: str
    count: int
    gross: int
    fee: int


async def summary_rows(session: AsyncSession, day: date) -> AsyncIterator[SummaryRow]:
    """The day's lines in file order (merchant number, then class), streamed."""
    line = SettlementLine
    stmt = (
        select(line.merchant_no, Merchant.name, line.tx_class, line.count, line.gross, line.fee)
        .join(Merchant, Merchant.id == line.merchant_id)
        .where(line.clearing_date == day)
        .order_by(line.merchant_no, line.tx_class)
        .execution_options(yield_per=1000)
    )
    result = await session.stream(stmt)
    async for row in result:
        yield SummaryRow(*row)


# --- run rows -------------------------------------------------------------------------------


async def insert_run(session: AsyncSession, day: date, now: datetime) -> None:
    await session.execute(
        insert(SettlementRun).values(
            clearing_date=day, status=RunStatus.running, last_step=None, error=None, attempts=1,
            started_at=now, updated_at=now, settled_at=None,
        )
    )  # fmt: skip


async def set_run(
    session: AsyncSession,
    day: date,
    *,
    status: RunStatus,
    now: datetime,
    error: str | None = None,
    attempt: bool = False,
) -> None:
    values: dict[str, object] = {"status": status, "updated_at": now, "error": error}
    if attempt:
        values["attempts"] = SettlementRun.attempts + 1
    if status is RunStatus.settled:
        values["settled_at"] = now
    await session.execute(
        update(SettlementRun).where(SettlementRun.clearing_date == day).values(**values)
    )
