"""All SQL of the billers' settlement. A biller's day is read from the journal: every
transaction that moved ``biller_payable:<code>`` on the clearing date (settlement postings left
out) is one bill payment (a credit) or one refund (a debit), and each payment's fee is computed
in the database from the biller's fee rule, one payment at a time, then summed per biller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    and_,
    case,
    cast,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.bills.models import Biller
from cardsvc.ledger.models import (
    AccountKind,
    LedgerAccount,
    LedgerLine,
    LedgerTransaction,
    LedgerTransactionKey,
    Side,
)
from settlement.billers.models import BillerBatch
from settlement.nightly.models import BatchStatus

# Ledger transaction types that move a biller's payable but are not the day's trade: the
# settlement's own fee postings and payouts.
FEE_TX_TYPE = "biller_settlement"
PAYOUT_TX_TYPE = "settlement_payout"
NOT_TRADE = (FEE_TX_TYPE, PAYOUT_TX_TYPE)


def _signed() -> ColumnElement[int]:
    line = LedgerLine
    return case((line.side == Side.credit, line.amount), else_=-line.amount)


def movements(day: date) -> Select[str, int, int]:
    """One row per transaction that moved a biller's payable on ``day`` (trade only): the
    biller's code, the transaction and its signed amount (payment > 0, refund < 0)."""
    t, line, account = LedgerTransaction, LedgerLine, LedgerAccount
    return (
        select(
            account.owner_ref.label("biller_code"),
            line.transaction_id.label("transaction_id"),
            # A bigint on PostgreSQL too (its sum of bigints is a numeric), so that the fee's
            # division below is an integer one.
            cast(func.sum(_signed()), BigInteger).label("amount"),
        )
        .select_from(line)
        .join(account, account.id == line.account_id)
        .join(t, and_(t.id == line.transaction_id, t.clearing_date == day))
        .where(
            line.clearing_date == day,
            account.kind == AccountKind.biller_payable,
            t.tx_type.not_in(NOT_TRADE),
        )
        .group_by(account.owner_ref, line.transaction_id)
    )


def fee_of_payment(amount: Any, fixed: Any, bps: Any, cap: Any) -> ColumnElement[int]:
    """docs/bills.md §1 in SQL: fixed + amount × bps / 10 000 rounded down, at most the cap when
    there is one, never more than the amount; a refund (amount ≤ 0) pays none."""
    # The bare operator: integer division (rounding down, the amounts being positive) in both
    # PostgreSQL and SQLite; SQLAlchemy's ``//`` goes through a numeric on PostgreSQL.
    raw = fixed + (amount * bps).op("/", return_type=BigInteger())(10_000)
    capped = case((and_(cap > 0, raw > cap), cap), else_=raw)
    return case((amount <= 0, 0), (capped > amount, amount), else_=capped)


async def make_batches(session: AsyncSession, day: date) -> tuple[int, int]:
    """One batch per biller whose payable moved on ``day``; returns (batches, total net)."""
    moved = movements(day).subquery()
    b = Biller
    fee = fee_of_payment(moved.c.amount, b.fee_fixed, b.fee_bps, b.fee_max)
    per_payment = (
        select(
            moved.c.biller_code,
            moved.c.amount,
            fee.label("fee"),
        )
        .join(b, b.code == moved.c.biller_code)
        .subquery()
    )
    gross = func.sum(per_payment.c.amount)
    fees = func.sum(per_payment.c.fee)
    rows = select(
        literal(day).label("clearing_date"),
        per_payment.c.biller_code,
        func.count(),
        func.count().filter(per_payment.c.amount > 0),
        gross,
        fees,
        gross - fees,
        # Refunds above the payments, or fees above what is left: nothing to pay that day; the
        # negative net is carried into the biller's next due batch.
        case(
            (and_(gross > 0, gross - fees >= 0), BatchStatus.due.value),
            else_=BatchStatus.carried.value,
        ),
    ).group_by(per_payment.c.biller_code)
    columns = [
        "clearing_date", "biller_code", "count", "payments", "gross", "fee", "net", "status",
    ]  # fmt: skip
    await session.execute(insert(BillerBatch).from_select(columns, rows))
    stmt = select(func.count(), func.coalesce(func.sum(BillerBatch.net), 0)).where(
        BillerBatch.clearing_date == day
    )
    count, net = (await session.execute(stmt)).one()
    return int(count), int(net)


async def payable_movement(session: AsyncSession, day: date) -> int:
    """The day's movement of every biller's payable, settlement postings left out."""
    moved = movements(day).subquery()
    stmt = select(func.coalesce(func.sum(moved.c.amount), 0))
    return int((await session.execute(stmt)).scalar_one())


async def biller_movement(session: AsyncSession, day: date, code: str) -> tuple[int, int]:
    """(transactions, signed sum) of one biller's payable on ``day``, settlement left out."""
    moved = movements(day).where(LedgerAccount.owner_ref == code).subquery()
    stmt = select(func.count(), func.coalesce(func.sum(moved.c.amount), 0))
    count, total = (await session.execute(stmt)).one()
    return int(count), int(total)


@dataclass(frozen=True, slots=True)
class FeePostings:
    fees: int  # the fees the day's settlements took (its batches and the carried ones they took)
    keyed: int  # settled batches of the day whose fee posting carries the day's key
    with_fee: int  # settled batches of the day with a fee to post
    journal: int  # the amount of those postings in the ledger


async def fee_postings(session: AsyncSession, day: date) -> FeePostings:
    """The fee postings of the day's settled biller batches as the ledger holds them (found
    through their keys, then read in the partitions of the days they landed on)."""
    b, key, t = BillerBatch, LedgerTransactionKey, LedgerTransaction
    settled = and_(b.settled_on == day)
    fees = int(
        (
            await session.execute(select(func.coalesce(func.sum(b.fee), 0)).where(settled))
        ).scalar_one()
    )
    expected = literal(f"settlement:{day.isoformat()}:biller:") + b.biller_code + literal(":clear")
    own = and_(b.clearing_date == day, b.status == BatchStatus.posted)
    stmt = (
        select(
            func.count(key.idempotency_key).filter(key.idempotency_key == expected),
            func.count().filter(b.ledger_transaction_id.is_not(None)),
        )
        .select_from(b)
        .outerjoin(key, key.transaction_id == b.ledger_transaction_id)
        .where(own)
    )
    keyed, with_fee = (await session.execute(stmt)).one()
    ids = select(b.ledger_transaction_id).where(own, b.ledger_transaction_id.is_not(None))
    landed = list(
        (
            await session.execute(
                select(key.clearing_date).distinct().where(key.transaction_id.in_(ids))
            )
        )
        .scalars()
        .all()
    )
    journal = 0
    if landed:
        journal = int(
            (
                await session.execute(
                    select(func.coalesce(func.sum(t.amount), 0)).where(
                        t.clearing_date.in_(landed), t.id.in_(ids)
                    )
                )
            ).scalar_one()
        )
    return FeePostings(fees, int(keyed), int(with_fee), journal)


# --- what the files show --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchRow:
    biller_code: str
    biller_name: str
    count: int
    payments: int
    gross: int
    fee: int
    net: int
    status: BatchStatus
    payout_reference: str | None


async def batch_rows(session: AsyncSession, day: date) -> AsyncIterator[BatchRow]:
    b = BillerBatch
    stmt = (
        select(
            b.biller_code,
            Biller.name,
            b.count,
            b.payments,
            b.gross,
            b.fee,
            b.net,
            b.status,
            b.payout_reference,
        )
        .join(Biller, Biller.code == b.biller_code)
        .where(b.clearing_date == day)
        .order_by(b.biller_code)
    )
    for row in (await session.execute(stmt)).all():
        yield BatchRow(*row)
