"""All SQL of payees and payouts. A day's payouts are made by one ``INSERT ... SELECT ... GROUP
BY`` over the merchants' posted, unpaid batches; the bank file's rows stream in reference order."""

from __future__ import annotations

import calendar
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from settlement.nightly.models import BatchStatus, SettlementBatch
from settlement.payouts.models import Cycle, PayoutStatus, SettlementPayee, SettlementPayout
from terminals.registry.models import Merchant


def reference(day: date, merchant_no: str) -> str:
    return f"P{day:%Y%m%d}{merchant_no}"


# --- payees ---------------------------------------------------------------------------------


async def merchant_name(session: AsyncSession, merchant_no: str) -> str | None:
    stmt = select(Merchant.name).where(Merchant.merchant_no == merchant_no)
    found: str | None = (await session.execute(stmt)).scalar_one_or_none()
    return found


async def get_payee(
    session: AsyncSession, merchant_no: str, *, for_update: bool = False
) -> SettlementPayee | None:
    stmt = select(SettlementPayee).where(SettlementPayee.merchant_no == merchant_no)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


def add_payee(session: AsyncSession, payee: SettlementPayee) -> None:
    session.add(payee)


@dataclass(frozen=True, slots=True)
class PayeeRow:
    merchant_no: str
    merchant_name: str
    payee: SettlementPayee | None


async def list_payees(session: AsyncSession, limit: int = 5000) -> list[PayeeRow]:
    """Every merchant with its payee row (none: the defaults, daily and no bank details)."""
    stmt = (
        select(Merchant.merchant_no, Merchant.name, SettlementPayee)
        .outerjoin(SettlementPayee, SettlementPayee.merchant_no == Merchant.merchant_no)
        .order_by(Merchant.merchant_no)
        .limit(limit)
    )
    return [PayeeRow(*row) for row in (await session.execute(stmt)).all()]


# --- the day's payouts ----------------------------------------------------------------------


def cycle_falls_on(day: date) -> ColumnElement[bool]:
    """Payees (or merchants without one: daily) whose cycle falls on ``day``."""
    p = SettlementPayee
    last = calendar.monthrange(day.year, day.month)[1]
    monthly = p.cycle_day == day.day
    if day.day == last:  # a day past the month's end falls on its last day
        monthly = p.cycle_day >= day.day
    return or_(
        p.merchant_no.is_(None),
        p.cycle == Cycle.daily,
        and_(p.cycle == Cycle.weekly, p.cycle_day == day.isoweekday()),
        and_(p.cycle == Cycle.monthly, monthly),
    )


def _unpaid(day: date) -> ColumnElement[bool]:
    b = SettlementBatch
    return and_(
        b.status == BatchStatus.posted,
        b.payout_reference.is_(None),
        b.clearing_date <= day,
        b.net > 0,
    )


async def make_payouts(session: AsyncSession, day: date, now: datetime) -> None:
    """One payout per merchant whose cycle falls on ``day`` and who is owed posted, unpaid net:
    ``due`` with a snapshot of its bank details, or ``held`` without them; then the batches a due
    payout pays are stamped with its reference."""
    b, p = SettlementBatch, SettlementPayee
    held = p.account_no.is_(None)
    rows = (
        select(
            literal(day).label("clearing_date"),
            b.merchant_no,
            (literal(f"P{day:%Y%m%d}") + b.merchant_no).label("reference"),
            func.sum(b.net).label("amount"),
            p.bank_name,
            p.bank_branch,
            p.account_no,
            p.account_holder,
            case((held, PayoutStatus.held.value), else_=PayoutStatus.due.value).label("status"),
            literal(now).label("created_at"),
        )
        .select_from(b)
        .outerjoin(p, p.merchant_no == b.merchant_no)
        .where(_unpaid(day), cycle_falls_on(day))
        .group_by(b.merchant_no, p.bank_name, p.bank_branch, p.account_no, p.account_holder)
    )
    columns = [
        "clearing_date", "merchant_no", "reference", "amount", "bank_name", "bank_branch",
        "account_no", "account_holder", "status", "created_at",
    ]  # fmt: skip
    await session.execute(insert(SettlementPayout).from_select(columns, rows))
    due = select(SettlementPayout.merchant_no).where(
        SettlementPayout.clearing_date == day, SettlementPayout.status == PayoutStatus.due
    )
    await session.execute(
        update(b)
        .where(_unpaid(day), b.merchant_no.in_(due))
        .values(payout_reference=literal(f"P{day:%Y%m%d}") + b.merchant_no)
    )


@dataclass(frozen=True, slots=True)
class PayoutTotals:
    due: int
    due_amount: int
    held: int
    held_amount: int
    issued: int
    issued_amount: int


async def payout_totals(session: AsyncSession, day: date) -> PayoutTotals:
    o = SettlementPayout

    def of(*statuses: PayoutStatus) -> tuple[ColumnElement[int], ColumnElement[int]]:
        where = o.status.in_(statuses)
        return func.count().filter(where), func.coalesce(func.sum(o.amount).filter(where), 0)

    stmt = select(
        *of(PayoutStatus.due),
        *of(PayoutStatus.held),
        *of(PayoutStatus.issued, PayoutStatus.confirmed),
    ).where(o.clearing_date == day)
    row = (await session.execute(stmt)).one()
    return PayoutTotals(*(int(v) for v in row))


@dataclass(frozen=True, slots=True)
class PayoutLine:
    reference: str
    merchant_no: str
    merchant_name: str
    amount: int
    bank_name: str | None
    bank_branch: str | None
    account_no: str | None
    account_holder: str | None
    status: PayoutStatus


def _lines(day: date, statuses: Sequence[PayoutStatus]) -> Select[*tuple[Any, ...]]:
    o = SettlementPayout
    return (
        select(
            o.reference,
            o.merchant_no,
            Merchant.name,
            o.amount,
            o.bank_name,
            o.bank_branch,
            o.account_no,
            o.account_holder,
            o.status,
        )
        .join(Merchant, Merchant.merchant_no == o.merchant_no)
        .where(o.clearing_date == day, o.status.in_(statuses))
        .order_by(o.reference)
    )


async def stream_payouts(
    session: AsyncSession, day: date, statuses: Sequence[PayoutStatus]
) -> AsyncIterator[PayoutLine]:
    result = await session.stream(_lines(day, statuses).execution_options(yield_per=1000))
    async for row in result:
        yield PayoutLine(*row)


async def list_payouts(
    session: AsyncSession, day: date, statuses: Sequence[PayoutStatus]
) -> list[PayoutLine]:
    return [PayoutLine(*row) for row in (await session.execute(_lines(day, statuses))).all()]


async def due_payouts(session: AsyncSession, day: date, limit: int) -> list[PayoutLine]:
    o = SettlementPayout
    stmt = _lines(day, [PayoutStatus.due]).limit(limit).with_for_update(of=o)
    return [PayoutLine(*row) for row in (await session.execute(stmt)).all()]


async def mark_issued(
    session: AsyncSession, reference: str, transaction_id: int, now: datetime
) -> None:
    o = SettlementPayout
    await session.execute(
        update(o)
        .where(o.reference == reference, o.status == PayoutStatus.due)
        .values(status=PayoutStatus.issued, ledger_transaction_id=transaction_id, issued_at=now)
    )


@dataclass(frozen=True, slots=True)
class PayoutRef:
    reference: str
    merchant_no: str
    clearing_date: date
    amount: int
    status: PayoutStatus


async def by_references(session: AsyncSession, references: Sequence[str]) -> list[PayoutRef]:
    o = SettlementPayout
    if not references:
        return []
    stmt = (
        select(o.reference, o.merchant_no, o.clearing_date, o.amount, o.status)
        .where(o.reference.in_(sorted(set(references))))
        .order_by(o.reference)
        .with_for_update()
    )
    return [PayoutRef(*row) for row in (await session.execute(stmt)).all()]


async def mark_confirmed(session: AsyncSession, reference: str, now: datetime) -> bool:
    o = SettlementPayout
    result = await session.execute(
        update(o)
        .where(o.reference == reference, o.status == PayoutStatus.issued)
        .values(status=PayoutStatus.confirmed, confirmed_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


async def unbalanced_payouts(session: AsyncSession, day: date) -> int:
    """Payouts of ``day`` (not held) whose amount is not the net of the batches they pay."""
    o, b = SettlementPayout, SettlementBatch
    paid = (
        select(b.payout_reference.label("reference"), func.sum(b.net).label("net"))
        # The day's references, as a range the index answers: P<YYYYMMDD> <= ref < P<YYYYMMDD+1>.
        .where(
            b.payout_reference >= f"P{day:%Y%m%d}",
            b.payout_reference < f"P{day + timedelta(days=1):%Y%m%d}",
        )
        .group_by(b.payout_reference)
        .subquery()
    )
    stmt = (
        select(func.count())
        .select_from(o)
        .outerjoin(paid, paid.c.reference == o.reference)
        .where(
            o.clearing_date == day,
            o.status != PayoutStatus.held,
            or_(paid.c.net.is_(None), paid.c.net != o.amount),
        )
    )
    return int((await session.execute(stmt)).scalar_one())
