"""All SQL of payees and payouts. A day's payouts are made by one ``INSERT ... SELECT ... GROUP
BY`` over the merchants' posted, unpaid batches; the bank file's rows stream in reference order."""

from __future__ import annotations

import calendar
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.bills.models import Biller, SettlementCycle
from settlement.billers.models import BillerBatch
from settlement.nightly.models import BatchStatus, SettlementBatch
from settlement.payouts.models import (
    Cycle,
    PayeeKind,
    PayoutStatus,
    SettlementPayee,
    SettlementPayout,
)
from terminals.registry.models import Merchant

MERCHANT_PREFIX = "P"
BILLER_PREFIX = "B"


def reference(day: date, merchant_no: str) -> str:
    return f"{MERCHANT_PREFIX}{day:%Y%m%d}{merchant_no}"


def biller_reference(day: date, code: str) -> str:
    """``B<YYYYMMDD><biller code>``: at most 25 characters, unique per payout."""
    return f"{BILLER_PREFIX}{day:%Y%m%d}{code}"


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
    # Posted batches, and the carried ones a posting settled (their zero or negative net is
    # taken off the payout that pays the batch they were settled with).
    return and_(
        or_(
            b.status == BatchStatus.posted,
            and_(b.status == BatchStatus.carried, b.ledger_transaction_id.is_not(None)),
        ),
        b.payout_reference.is_(None),
        b.clearing_date <= day,
    )


PAYOUT_COLUMNS = [
    "clearing_date", "payee_kind", "merchant_no", "reference", "amount", "bank_name",
    "bank_branch", "account_no", "account_holder", "status", "created_at",
]  # fmt: skip


def biller_cycle_falls_on(day: date) -> ColumnElement[bool]:
    """Billers paid on the night that settles ``day``: daily every day, weekly when ``day`` is
    a Sunday, monthly when it is the month's last day (docs/bills.md §3)."""
    cycles = [Biller.settlement_cycle == SettlementCycle.daily]
    if day.isoweekday() == 7:
        cycles.append(Biller.settlement_cycle == SettlementCycle.weekly)
    if day.day == calendar.monthrange(day.year, day.month)[1]:
        cycles.append(Biller.settlement_cycle == SettlementCycle.monthly)
    return or_(*cycles)


def _biller_unpaid(day: date) -> ColumnElement[bool]:
    c = BillerBatch
    return and_(c.settled_on.is_not(None), c.payout_reference.is_(None), c.clearing_date <= day)


async def make_biller_payouts(session: AsyncSession, day: date, now: datetime) -> None:
    """One payout per biller whose cycle falls on ``day`` and who is owed settled, unpaid net,
    with a snapshot of the biller's bank details (always set: a biller is registered with
    them); then the biller batches it pays are stamped with its reference."""
    c = BillerBatch
    prefix = literal(f"{BILLER_PREFIX}{day:%Y%m%d}")
    rows = (
        select(
            literal(day).label("clearing_date"),
            literal(PayeeKind.biller.value).label("payee_kind"),
            c.biller_code,
            (prefix + c.biller_code).label("reference"),
            func.sum(c.net).label("amount"),
            Biller.bank_name,
            literal(None, SettlementPayout.bank_branch.type).label("bank_branch"),
            Biller.bank_account_no,
            Biller.bank_account_name,
            literal(PayoutStatus.due.value).label("status"),
            literal(now).label("created_at"),
        )
        .select_from(c)
        .join(Biller, Biller.code == c.biller_code)
        .where(_biller_unpaid(day), biller_cycle_falls_on(day))
        .group_by(c.biller_code, Biller.bank_name, Biller.bank_account_no, Biller.bank_account_name)
        .having(func.sum(c.net) > 0)
    )
    await session.execute(insert(SettlementPayout).from_select(PAYOUT_COLUMNS, rows))
    paid = select(SettlementPayout.merchant_no).where(
        SettlementPayout.clearing_date == day,
        SettlementPayout.payee_kind == PayeeKind.biller,
    )
    await session.execute(
        update(c)
        .where(_biller_unpaid(day), c.biller_code.in_(paid))
        .values(payout_reference=prefix + c.biller_code)
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
            literal(PayeeKind.merchant.value).label("payee_kind"),
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
        .having(func.sum(b.net) > 0)
    )
    await session.execute(insert(SettlementPayout).from_select(PAYOUT_COLUMNS, rows))
    due = select(SettlementPayout.merchant_no).where(
        SettlementPayout.clearing_date == day,
        SettlementPayout.payee_kind == PayeeKind.merchant,
        SettlementPayout.status == PayoutStatus.due,
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
    merchant_no: str  # the payee's number: a merchant number or a biller code
    merchant_name: str
    amount: int
    bank_name: str | None
    bank_branch: str | None
    account_no: str | None
    account_holder: str | None
    status: PayoutStatus
    payee_kind: PayeeKind = PayeeKind.merchant


def _lines(day: date, statuses: Sequence[PayoutStatus]) -> Select[*tuple[Any, ...]]:
    o = SettlementPayout
    return (
        select(
            o.reference,
            o.merchant_no,
            func.coalesce(Merchant.name, Biller.name, ""),
            o.amount,
            o.bank_name,
            o.bank_branch,
            o.account_no,
            o.account_holder,
            o.status,
            o.payee_kind,
        )
        .outerjoin(
            Merchant,
            and_(o.payee_kind == PayeeKind.merchant, Merchant.merchant_no == o.merchant_no),
        )
        .outerjoin(Biller, and_(o.payee_kind == PayeeKind.biller, Biller.code == o.merchant_no))
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
    """Payouts of ``day`` (not held) whose amount is not the net of the batches they pay (a
    merchant's settlement batches, a biller's biller batches)."""
    o, b, c = SettlementPayout, SettlementBatch, BillerBatch
    next_day = day + timedelta(days=1)
    # The day's references, as ranges the indexes answer: P<YYYYMMDD> <= ref < P<YYYYMMDD+1>.
    merchants = (
        select(b.payout_reference.label("reference"), func.sum(b.net).label("net"))
        .where(
            b.payout_reference >= f"{MERCHANT_PREFIX}{day:%Y%m%d}",
            b.payout_reference < f"{MERCHANT_PREFIX}{next_day:%Y%m%d}",
        )
        .group_by(b.payout_reference)
    )
    billers = (
        select(c.payout_reference.label("reference"), func.sum(c.net).label("net"))
        .where(
            c.payout_reference >= f"{BILLER_PREFIX}{day:%Y%m%d}",
            c.payout_reference < f"{BILLER_PREFIX}{next_day:%Y%m%d}",
        )
        .group_by(c.payout_reference)
    )
    paid = union_all(merchants, billers).subquery()
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
