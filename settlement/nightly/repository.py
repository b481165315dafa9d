"""All SQL of the nightly settlement. The day's work is done by aggregation in the database
(``INSERT ... SELECT ... GROUP BY``): bound to one clearing date, each statement reads one
partition of the records and of the journal on PostgreSQL; nothing loads the day into Python.
"""

from __future__ import annotations

import fcntl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    union,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from cardsvc.accounts.models import AccountMovement, MovementKind, MovementStatus, OnlineAccount
from cardsvc.bank.models import BankCredit, CreditStatus
from cardsvc.breaks.models import BreakItem, BreakKind, BreakStatus
from cardsvc.clearing.models import ClearingDay
from cardsvc.ledger.models import (
    AccountKind,
    LedgerAccount,
    LedgerLine,
    LedgerTransaction,
    LedgerTransactionKey,
    Side,
)
from settlement.nightly.models import (
    BatchStatus,
    RunStatus,
    SettlementBatch,
    SettlementLine,
    SettlementRun,
    SettlementStep,
    Step,
)
from terminals.registry.models import Merchant, Terminal
from terminals.uploads.models import (
    CLAIMING_CODES,
    OfflineCardKey,
    OfflineRecord,
    OfflineSerialKey,
    UploadBatch,
)

OFFLINE_CLASS = "offline"
# Ledger transaction types that reach a merchant's pending account but are not the day's trade:
# the offline batches (cleared record by record from the records instead) and settlement itself.
NOT_TRADE = ("purchase_batch", "settlement")
# Rows fetched per round trip when a file streams the day.
YIELD_PER = 2000


async def _rows(result: Any) -> AsyncIterator[Any]:  # an AsyncResult of any row shape
    """The rows of a streamed result, fetched ``YIELD_PER`` at a time: one switch into the
    driver per chunk rather than per row, which is most of the cost of a million rows."""
    async for chunk in result.partitions(YIELD_PER):
        for row in chunk:
            yield row


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


# --- the day's conservation checks ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UploadTotals:
    batches: int
    unbalanced: int  # batches whose records != accepted + refused (count or amount)
    declared_records: int  # sum of the batches' record counts
    stored_records: int  # records stored with the day's clearing date


async def upload_totals(session: AsyncSession, day: date) -> UploadTotals:
    """The day's uploads against their records: each batch's count and amount are its accepted
    plus its refused ones, and the records of the day are those the batches declared."""
    b = UploadBatch
    off = or_(
        b.record_count != b.accepted_count + b.refused_count,
        b.total_amount != b.accepted_amount + b.refused_amount,
    )
    stmt = select(
        func.count(),
        func.count().filter(off),
        func.coalesce(func.sum(b.record_count), 0),
    ).where(b.clearing_date == day)
    batches, unbalanced, declared = (await session.execute(stmt)).one()
    stored = (
        await session.execute(
            select(func.count())
            .select_from(OfflineRecord)
            .where(OfflineRecord.clearing_date == day)
        )
    ).scalar_one()
    return UploadTotals(int(batches), int(unbalanced), int(declared), int(stored))


@dataclass(frozen=True, slots=True)
class PostingTotals:
    posted: int  # batches marked posted
    keyed: int  # of those, the ones whose transaction carries the day's key for the merchant
    gross: int  # the posted batches' gross
    journal: int  # the amount of their ledger transactions


async def posting_totals(session: AsyncSession, day: date) -> PostingTotals:
    """The postings of the day's batches as the ledger holds them. The transactions are found
    through their keys (not partitioned), then read with their clearing dates bound, so the
    journal is read in the partitions of the days the postings landed on only."""
    b, key, t = SettlementBatch, LedgerTransactionKey, LedgerTransaction
    expected_key = literal(f"settlement:{day.isoformat()}:") + b.merchant_no + literal(":clear")
    stmt = (
        select(
            func.count(),
            func.count(key.idempotency_key).filter(key.idempotency_key == expected_key),
            func.coalesce(func.sum(b.gross), 0),
        )
        .select_from(b)
        .outerjoin(key, key.transaction_id == b.ledger_transaction_id)
        .where(b.clearing_date == day, b.status == BatchStatus.posted)
    )
    posted, keyed, gross = (await session.execute(stmt)).one()
    # Carried batches of earlier days settled by the day's postings: their gross is in them.
    c = aliased(SettlementBatch)
    carried_stmt = select(func.coalesce(func.sum(c.gross), 0)).where(
        c.status == BatchStatus.carried,
        c.clearing_date < day,
        c.ledger_transaction_id.in_(
            select(b.ledger_transaction_id).where(
                b.clearing_date == day, b.status == BatchStatus.posted
            )
        ),
    )
    gross = int(gross) + int((await session.execute(carried_stmt)).scalar_one())
    days_stmt = (
        select(key.clearing_date)
        .distinct()
        .join(b, key.transaction_id == b.ledger_transaction_id)
        .where(b.clearing_date == day, b.status == BatchStatus.posted)
    )
    landed = list((await session.execute(days_stmt)).scalars().all())
    journal = 0
    if landed:
        ids = select(b.ledger_transaction_id).where(
            b.clearing_date == day, b.status == BatchStatus.posted
        )
        journal_stmt = select(func.coalesce(func.sum(t.amount), 0)).where(
            t.clearing_date.in_(landed), t.id.in_(ids)
        )
        journal = int((await session.execute(journal_stmt)).scalar_one())
    return PostingTotals(int(posted), int(keyed), int(gross), journal)


# --- the day's funding of online accounts ---------------------------------------------------

# The ledger transaction types of the money that funds or pays out online accounts: counter cash
# in and out, bank credits (to an account or to suspense) and credits moved out of suspense.
FUNDING_TYPES = (
    "account_deposit",
    "account_withdrawal",
    "bank_credit",
    "bank_credit_suspense",
    "bank_suspense_assign",
)


@dataclass(frozen=True, slots=True)
class FundingTotals:
    """One kind of the day's funding movements against the ledger."""

    source: str  # deposit, withdrawal, bank credit, suspense credit
    movements: int  # posted movements of the day
    amount: int  # their amounts
    unkeyed: int  # of those, without a transaction under their key (or not the one they name)
    different: int  # keyed, but the transaction is not theirs: amount, type, reference, accounts


def _funding_sources(day: date) -> Any:
    """Every posted funding movement of the day with what its ledger transaction must be: its
    key, type, reference, and the accounts it debits and credits by its amount."""
    m, c, acct = AccountMovement, BankCredit, OnlineAccount
    deposit = m.kind == MovementKind.deposit
    resident = cast(acct.resident_id, String)
    movements = (
        select(
            case((deposit, literal("deposit")), else_=literal("withdrawal")).label("source"),
            m.amount.label("amount"),
            (
                case((deposit, literal("deposit:")), else_=literal("withdrawal:"))
                + m.counter_code
                + literal(":")
                + m.receipt_no
            ).label("key"),
            m.ledger_transaction_id.label("transaction_id"),
            case((deposit, literal("account_deposit")), else_=literal("account_withdrawal")).label(
                "tx_type"
            ),
            (literal("account_movement:") + cast(m.id, String)).label("record_ref"),
            case((deposit, literal("counter_cash")), else_=literal("resident_account")).label(
                "debit_kind"
            ),
            case((deposit, m.counter_code), else_=resident).label("debit_owner"),
            case((deposit, literal("resident_account")), else_=literal("counter_cash")).label(
                "credit_kind"
            ),
            case((deposit, resident), else_=m.counter_code).label("credit_owner"),
        )
        .join(acct, acct.id == m.account_id)
        .where(m.clearing_date == day, m.status == MovementStatus.posted)
    )
    matched = c.status == CreditStatus.posted  # an assigned credit went to suspense first
    credits = (
        select(
            case((matched, literal("bank credit")), else_=literal("suspense credit")),
            c.amount,
            literal("bank-credit:") + c.bank_code + literal(":") + c.bank_reference,
            c.ledger_transaction_id,
            case((matched, literal("bank_credit")), else_=literal("bank_credit_suspense")),
            literal("bank_credit:") + cast(c.id, String),
            literal("bank"),
            c.bank_code,
            case((matched, literal("resident_account")), else_=literal("suspense_bank")),
            case((matched, resident), else_=c.bank_code),
        )
        .outerjoin(acct, acct.id == c.account_id)
        .where(c.clearing_date == day)
    )
    return union_all(movements, credits).subquery("funding")


async def funding_totals(session: AsyncSession, day: date) -> list[FundingTotals]:
    """The day's counter deposits and withdrawals and bank credits against their ledger
    transactions, each found by its idempotency key (the key table is not partitioned) and
    read with the clearing dates the keys name bound, so the journal is read in the partitions
    of the days the postings landed on only (an approved withdrawal lands on its approval's)."""
    s = _funding_sources(day)
    key, t, line, account = LedgerTransactionKey, LedgerTransaction, LedgerLine, LedgerAccount
    keyed = and_(key.idempotency_key == s.c.key, key.transaction_id == s.c.transaction_id)
    landed_stmt = select(key.clearing_date).distinct().select_from(s).join(key, keyed)
    landed = list((await session.execute(landed_stmt)).scalars().all())
    if landed:
        theirs = (
            select(t.id)
            .where(
                t.clearing_date.in_(landed),
                t.id == key.transaction_id,
                t.amount == s.c.amount,
                t.tx_type == s.c.tx_type,
                t.record_ref == s.c.record_ref,
            )
            .exists()
        )
        on_their_accounts = (
            select(func.coalesce(func.sum(line.amount), 0))
            .join(account, account.id == line.account_id)
            .where(
                line.clearing_date.in_(landed),
                line.transaction_id == key.transaction_id,
                or_(
                    and_(
                        line.side == Side.debit,
                        account.kind == s.c.debit_kind,
                        account.owner_ref == s.c.debit_owner,
                    ),
                    and_(
                        line.side == Side.credit,
                        account.kind == s.c.credit_kind,
                        account.owner_ref == s.c.credit_owner,
                    ),
                ),
            )
            .scalar_subquery()
        )
        all_lines = (
            select(func.count())
            .select_from(line)
            .where(line.clearing_date.in_(landed), line.transaction_id == key.transaction_id)
            .scalar_subquery()
        )
        good: ColumnElement[bool] = and_(
            theirs, on_their_accounts == 2 * s.c.amount, all_lines == 2
        )
    else:
        good = literal(False)
    stmt = (
        select(
            s.c.source,
            func.count(),
            func.coalesce(func.sum(s.c.amount), 0),
            func.count().filter(key.transaction_id.is_(None)),
            func.count().filter(key.transaction_id.is_not(None), ~good),
        )
        .select_from(s)
        .outerjoin(key, keyed)
        .group_by(s.c.source)
        .order_by(s.c.source)
    )
    rows = (await session.execute(stmt)).all()
    return [FundingTotals(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]


async def unexplained_funding(session: AsyncSession, day: date) -> dict[str, int]:
    """The day's funding transactions (read in the day's partition) that no posted movement or
    bank credit names as its posting with the same amount, by transaction type."""
    t, m, c = LedgerTransaction, AccountMovement, BankCredit
    movement = (
        select(m.id)
        .where(
            m.ledger_transaction_id == t.id,
            m.status == MovementStatus.posted,
            m.amount == t.amount,
        )
        .exists()
    )
    credit = select(c.id).where(c.ledger_transaction_id == t.id, c.amount == t.amount).exists()
    assignment = (
        select(c.id)
        .where(
            c.assign_transaction_id == t.id,
            c.status == CreditStatus.assigned,
            c.amount == t.amount,
        )
        .exists()
    )
    explained = case(
        (t.tx_type.in_(("account_deposit", "account_withdrawal")), movement),
        (t.tx_type == "bank_suspense_assign", assignment),
        else_=credit,
    )
    stmt = (
        select(t.tx_type, func.count())
        .where(t.clearing_date == day, t.tx_type.in_(FUNDING_TYPES), ~explained)
        .group_by(t.tx_type)
        .order_by(t.tx_type)
    )
    return {str(tx_type): int(n) for tx_type, n in (await session.execute(stmt)).all()}


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
    async for row in _rows(result):
        yield SummaryRow(*row)


@dataclass(frozen=True, slots=True)
class DetailRow:
    """One cleared record (offline) or transaction (online) of a merchant on the day."""

    merchant_no: str
    tx_class: str
    source_id: int  # offline record id, or ledger transaction id
    terminal_no: str | None
    terminal_serial: int | None
    asn: str | None
    tx_datetime: str | None  # offline: the record's local YYYYMMDDhhmmss
    posted_at: datetime | None  # online: when the ledger posted it (UTC)
    amount: int
    result_code: str | None
    reference: str | None  # online: the idempotency key of the transaction


async def detail_rows(session: AsyncSession, day: date) -> AsyncIterator[list[DetailRow]]:
    """Every cleared record and online transaction of the day, in file order (merchant number,
    class, id), streamed ``YIELD_PER`` rows at a time (a million rows pass through here): the
    offline records of the day's partition and the journal lines of the merchants' pending
    accounts on the day."""
    r = OfflineRecord
    offline = (
        select(
            Merchant.merchant_no.label("merchant_no"),
            literal(OFFLINE_CLASS).label("tx_class"),
            r.id.label("source_id"),
            r.terminal_no.label("terminal_no"),
            r.terminal_serial.label("terminal_serial"),
            r.asn.label("asn"),
            r.tx_datetime.label("tx_datetime"),
            literal(None, LedgerTransaction.posted_at.type).label("posted_at"),
            func.coalesce(r.amount, 0).label("amount"),
            r.result_code.label("result_code"),
            literal(None, LedgerTransactionKey.idempotency_key.type).label("reference"),
        )
        .join(Merchant, Merchant.id == r.merchant_id)
        .where(r.clearing_date == day, r.result_code.in_(sorted(CLAIMING_CODES)))
    )
    t, line, account, key = LedgerTransaction, LedgerLine, LedgerAccount, LedgerTransactionKey
    signed = case((line.side == Side.credit, line.amount), else_=-line.amount)
    journal = (
        select(
            account.owner_ref.label("merchant_no"),
            t.tx_type.label("tx_class"),
            t.id.label("source_id"),
            literal(None, r.terminal_no.type).label("terminal_no"),
            literal(None, r.terminal_serial.type).label("terminal_serial"),
            literal(None, r.asn.type).label("asn"),
            literal(None, r.tx_datetime.type).label("tx_datetime"),
            t.posted_at.label("posted_at"),
            func.sum(signed).label("amount"),
            literal(None, r.result_code.type).label("result_code"),
            key.idempotency_key.label("reference"),
        )
        .select_from(line)
        .join(account, account.id == line.account_id)
        .join(t, and_(t.id == line.transaction_id, t.clearing_date == day))
        .outerjoin(key, key.transaction_id == t.id)
        .where(
            line.clearing_date == day,
            account.kind == AccountKind.merchant_pending,
            t.tx_type.not_in(NOT_TRADE),
        )
        .group_by(account.owner_ref, t.tx_type, t.id, t.posted_at, key.idempotency_key)
    )
    both = union_all(offline, journal).subquery()
    stmt = (
        select(*both.c)
        .order_by(both.c.merchant_no, both.c.tx_class, both.c.source_id)
        .execution_options(yield_per=YIELD_PER)
    )
    result = await session.stream(stmt)
    async for chunk in result.partitions(YIELD_PER):
        yield [DetailRow(*row) for row in chunk]


async def operators_of(session: AsyncSession, day: date) -> list[str]:
    """The merchant numbers of the day's operators, in order: every merchant with an upload
    cleared on the day or a settlement line. (One short string per merchant, never per record.)"""
    uploads = (
        select(Merchant.merchant_no)
        .join(UploadBatch, UploadBatch.merchant_id == Merchant.id)
        .where(UploadBatch.clearing_date == day)
    )
    lines = select(SettlementLine.merchant_no).where(SettlementLine.clearing_date == day)
    both = union(uploads, lines).subquery()
    stmt = select(both.c[0]).order_by(both.c[0])
    return [str(v) for v in (await session.execute(stmt)).scalars().all()]


@dataclass(frozen=True, slots=True)
class ResultTotal:
    merchant_no: str
    result_code: str
    count: int
    amount: int


async def result_totals(session: AsyncSession, day: date) -> AsyncIterator[ResultTotal]:
    """The day's uploaded records per merchant and result code (amounts where known)."""
    r = OfflineRecord
    stmt = (
        select(
            Merchant.merchant_no,
            r.result_code,
            func.count(),
            func.coalesce(func.sum(r.amount), 0),
        )
        .join(Merchant, Merchant.id == r.merchant_id)
        .where(r.clearing_date == day)
        .group_by(Merchant.merchant_no, r.result_code)
        .order_by(Merchant.merchant_no, r.result_code)
        .execution_options(yield_per=YIELD_PER)
    )
    result = await session.stream(stmt)
    async for row in _rows(result):
        yield ResultTotal(str(row[0]), str(row[1]), int(row[2]), int(row[3] or 0))


@dataclass(frozen=True, slots=True)
class RefusedRow:
    merchant_no: str
    terminal_no: str  # the terminal that uploaded it
    batch_no: int
    position: int
    record_id: int
    result_code: str
    asn: str | None
    terminal_serial: int | None
    tx_datetime: str | None
    amount: int | None
    gray: bool


async def refused_rows(session: AsyncSession, day: date) -> AsyncIterator[RefusedRow]:
    """The day's refused records, in file order (merchant, uploading terminal, batch, position)."""
    r, b = OfflineRecord, UploadBatch
    stmt = (
        select(
            Merchant.merchant_no,
            Terminal.terminal_no,
            b.batch_no,
            r.position,
            r.id,
            r.result_code,
            r.asn,
            r.terminal_serial,
            r.tx_datetime,
            r.amount,
            r.gray,
        )
        .join(Merchant, Merchant.id == r.merchant_id)
        .join(b, b.id == r.batch_id)
        .join(Terminal, Terminal.id == b.terminal_id)
        .where(r.clearing_date == day, r.result_code.not_in(sorted(CLAIMING_CODES)))
        .order_by(Merchant.merchant_no, Terminal.terminal_no, b.batch_no, r.position)
        .execution_options(yield_per=YIELD_PER)
    )
    result = await session.stream(stmt)
    async for row in _rows(result):
        yield RefusedRow(*row)


@dataclass(frozen=True, slots=True)
class UploadRow:
    merchant_no: str
    terminal_no: str
    batch_no: int
    record_count: int
    total_amount: int
    accepted_count: int
    accepted_amount: int
    refused_count: int
    refused_amount: int
    content_hash: str


async def upload_rows(session: AsyncSession, day: date) -> AsyncIterator[UploadRow]:
    """The uploads cleared on the day, in file order (merchant, terminal, batch number)."""
    b = UploadBatch
    stmt = (
        select(
            Merchant.merchant_no,
            Terminal.terminal_no,
            b.batch_no,
            b.record_count,
            b.total_amount,
            b.accepted_count,
            b.accepted_amount,
            b.refused_count,
            b.refused_amount,
            b.content_hash,
        )
        .join(Merchant, Merchant.id == b.merchant_id)
        .join(Terminal, Terminal.id == b.terminal_id)
        .where(b.clearing_date == day)
        .order_by(Merchant.merchant_no, Terminal.terminal_no, b.batch_no)
        .execution_options(yield_per=YIELD_PER)
    )
    result = await session.stream(stmt)
    async for row in _rows(result):
        yield UploadRow(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9]
        )


@dataclass(frozen=True, slots=True)
class LineRow:
    merchant_no: str
    tx_class: str
    count: int
    gross: int
    fee: int


async def line_rows(session: AsyncSession, day: date) -> AsyncIterator[LineRow]:
    """The day's lines without names, in order (merchant number, class)."""
    line = SettlementLine
    stmt = (
        select(line.merchant_no, line.tx_class, line.count, line.gross, line.fee)
        .where(line.clearing_date == day)
        .order_by(line.merchant_no, line.tx_class)
        .execution_options(yield_per=YIELD_PER)
    )
    result = await session.stream(stmt)
    async for row in _rows(result):
        yield LineRow(*row)


# --- one run at a time ---------------------------------------------------------------------

# The key of the PostgreSQL advisory lock that one settlement run holds (any day).
RUN_LOCK_KEY = 0x5E77_1E00


@asynccontextmanager
async def run_guard(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[bool]:
    """Hold the database's one-run-at-a-time guard for the block; yields False (and holds
    nothing) when another run holds it.

    PostgreSQL: a session-level advisory lock on a connection of its own, kept for the run and
    idle between statements (no transaction stays open, so the day cut's fence never waits for
    it); a killed run's connection ends, and its lock with it. SQLite (one host): an exclusive
    ``flock`` on a file beside the database, released by the kernel when the process dies.
    """
    engine: AsyncEngine = sessions.kw["bind"]
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            got = bool(
                (await conn.execute(select(func.pg_try_advisory_lock(RUN_LOCK_KEY)))).scalar_one()
            )
            await conn.commit()
            try:
                yield got
            finally:
                if got:
                    await conn.execute(select(func.pg_advisory_unlock(RUN_LOCK_KEY)))
                    await conn.commit()
        return
    database = engine.url.database or ""
    path = Path(f"{database}.settlement-lock") if database else None
    if path is None or database == ":memory:":
        yield True
        return
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


async def unsettled_days(session: AsyncSession, through: date) -> list[date]:
    """Clearing days up to ``through`` whose settlement is not done, oldest first."""
    day, run = ClearingDay, SettlementRun
    stmt = (
        select(day.clearing_date)
        .outerjoin(run, run.clearing_date == day.clearing_date)
        .where(
            day.clearing_date <= through,
            or_(run.clearing_date.is_(None), run.status != RunStatus.settled),
        )
        .order_by(day.clearing_date)
    )
    return list((await session.execute(stmt)).scalars().all())


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


# --- re-examination -------------------------------------------------------------------------
#
# Set-based statements over the open breaks of the days up to the one settled: each UPDATE
# closes what the evidence proves, in the database, so nothing of the breaks is loaded into
# Python. Evidence is what was accepted on a day up to the one settled (days the close step
# closed), so a rerun of the same day sees the same evidence; a closed break is never touched
# again, and a note is only written where it differs, so a rerun changes nothing.

REEXAMINER = "system:settlement"


def _open_breaks(kind: BreakKind, day: date) -> Any:
    return and_(
        BreakItem.kind == kind,
        BreakItem.status == BreakStatus.open,
        BreakItem.clearing_date <= day,
    )


def _held_record() -> Any:
    """The held record that opened the break under examination (same day's partition)."""
    r = OfflineRecord
    return and_(
        BreakItem.source == "offline_record",
        r.clearing_date == BreakItem.clearing_date,
        r.id == BreakItem.source_id,
    )


def _accepted_copy(day: date) -> Any:
    """A record accepted by ``day`` with the held record's card, counter, terminal and serial:
    the same debit, sent again with its proof (a recovered gray record, a TAC sent again)."""
    r, k, s = OfflineRecord, OfflineCardKey, OfflineSerialKey
    return (
        select(literal(1))
        .select_from(r)
        .join(s, and_(s.terminal_no == r.terminal_no, s.terminal_serial == r.terminal_serial))
        .join(
            k,
            and_(
                k.record_id == s.record_id,
                k.asn == r.asn,
                k.offline_counter == r.offline_counter,
            ),
        )
        .where(_held_record(), k.clearing_date <= day)
        .exists()
    )


def _counter_taken(day: date) -> Any:
    """A record accepted by ``day`` at the held record's card and counter."""
    r, k = OfflineRecord, OfflineCardKey
    return (
        select(literal(1))
        .select_from(r)
        .join(k, and_(k.asn == r.asn, k.offline_counter == r.offline_counter))
        .where(_held_record(), k.clearing_date <= day)
        .exists()
    )


def _next_record(day: date, *, chained: bool) -> Any:
    """A record accepted by ``day`` at the held record's counter + 1, whose balance before is
    (``chained``) or is not the held record's balance before less its amount."""
    r, k = OfflineRecord, OfflineCardKey
    expected = r.balance_before - r.amount
    balance = k.balance_before == expected if chained else k.balance_before != expected
    return (
        select(literal(1))
        .select_from(r)
        .join(k, and_(k.asn == r.asn, k.offline_counter == r.offline_counter + 1))
        .where(_held_record(), k.clearing_date <= day, balance)
        .exists()
    )


async def _resolve_where(
    session: AsyncSession, where: Any, resolution: str, note: str, now: datetime
) -> int:
    result: Any = await session.execute(
        update(BreakItem)
        .where(where)
        .values(
            status=BreakStatus.resolved,
            resolver=REEXAMINER,
            resolution=resolution,
            note=note,
            resolved_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


async def _note_where(session: AsyncSession, where: Any, note: str) -> None:
    await session.execute(
        update(BreakItem)
        .where(where, or_(BreakItem.note.is_(None), BreakItem.note != note))
        .values(note=note)
        .execution_options(synchronize_session=False)
    )


GRAY_RECOVERED = "recovered: its record came again with the TAC and was accepted (booked once)"
GRAY_NOT_DEBITED = "not debited: a later record of the card reuses its offline counter"
GRAY_PROVEN = (
    "debit proven by the card's next record (counter + 1, balance dropped by the amount); "
    "adjusting it in needs a posting: work it in the inbox"
)
GRAY_UNCHAINED = (
    "the card's next record does not follow from it (balance before differs): work it in the inbox"
)
GAP_FILLED = "filled: an accepted record holds the counter"
TAC_ACCEPTED_LATER = "accepted later: the same record came again with a TAC that verifies"


@dataclass(frozen=True, slots=True)
class GrayOutcome:
    recovered: int
    not_debited: int


async def reexamine_gray(session: AsyncSession, day: date, now: datetime) -> GrayOutcome:
    """Gray breaks against each card's later accepted records: the same debit accepted again
    with its TAC closes it (``recovered``: the accepted copy carried the money, nothing is
    booked twice); another record at its counter closes it (``not_debited``: the card never
    counted it); a next record whose balance follows from it proves the debit (noted, stays
    open: booking it needs a posting)."""
    gray = _open_breaks(BreakKind.gray, day)
    recovered = await _resolve_where(
        session, and_(gray, _accepted_copy(day)), "recovered", GRAY_RECOVERED, now
    )
    not_debited = await _resolve_where(
        session, and_(gray, _counter_taken(day)), "not_debited", GRAY_NOT_DEBITED, now
    )
    await _note_where(session, and_(gray, _next_record(day, chained=True)), GRAY_PROVEN)
    await _note_where(session, and_(gray, _next_record(day, chained=False)), GRAY_UNCHAINED)
    return GrayOutcome(recovered, not_debited)


async def reexamine_gaps(session: AsyncSession, day: date, now: datetime) -> int:
    """Counter gaps whose counter an accepted record now holds (a later upload filled it, one
    that could not see the gap open); how many closed."""
    k = OfflineCardKey
    filled = (
        select(literal(1))
        .where(
            k.asn == BreakItem.asn,
            k.offline_counter == BreakItem.counter,
            k.clearing_date <= day,
        )
        .exists()
    )
    return await _resolve_where(
        session, and_(_open_breaks(BreakKind.counter_gap, day), filled), "filled", GAP_FILLED, now
    )


async def reexamine_tac_copies(session: AsyncSession, day: date, now: datetime) -> int:
    """TAC-failed breaks whose record was accepted since (the same debit sent again with a TAC
    that verifies): the accepted copy carried the money; how many closed."""
    return await _resolve_where(
        session,
        and_(_open_breaks(BreakKind.tac_failed, day), _accepted_copy(day)),
        "accepted_later",
        TAC_ACCEPTED_LATER,
        now,
    )


@dataclass(frozen=True, slots=True)
class OpenBreaks:
    count: int
    amount: int  # fen, the known amounts
    noted: int  # with the given note


async def open_breaks(
    session: AsyncSession, kind: BreakKind, day: date, note: str | None = None
) -> OpenBreaks:
    noted = (
        func.coalesce(func.sum(case((BreakItem.note == note, 1), else_=0)), 0)
        if note is not None
        else literal(0)
    )
    found = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(BreakItem.amount), 0), noted).where(
                _open_breaks(kind, day)
            )
        )
    ).one()
    return OpenBreaks(int(found[0]), int(found[1]), int(found[2]))


TAC_VERIFIES = (
    "the TAC verifies on re-examination; accepting the record needs a posting: work it in the inbox"
)


@dataclass(frozen=True, slots=True)
class HeldTac:
    """A TAC-failed break and what its record's TAC covers."""

    break_id: int
    asn: str
    tx_type: int
    amount: int
    terminal_no: str
    terminal_serial: int
    tx_datetime: str
    key_version: int
    tac: str
    offline_counter: int | None


async def held_tacs(session: AsyncSession, day: date, after_id: int, limit: int) -> list[HeldTac]:
    """One page (in break id order, after ``after_id``) of the open TAC-failed breaks of the
    days up to ``day`` whose record carries every field its TAC covers."""
    r = OfflineRecord
    stmt = (
        select(
            BreakItem.id,
            r.asn,
            r.tx_type,
            r.amount,
            r.terminal_no,
            r.terminal_serial,
            r.tx_datetime,
            r.key_version,
            r.tac,
            r.offline_counter,
        )
        .join(r, _held_record())
        .where(
            _open_breaks(BreakKind.tac_failed, day),
            BreakItem.id > after_id,
            r.asn.is_not(None),
            r.tx_type.is_not(None),
            r.amount.is_not(None),
            r.terminal_no.is_not(None),
            r.terminal_serial.is_not(None),
            r.tx_datetime.is_not(None),
            r.key_version.is_not(None),
            r.tac.is_not(None),
        )
        .order_by(BreakItem.id)
        .limit(limit)
    )
    rows: Any = await session.execute(stmt)
    return [HeldTac(*row) for row in rows.all()]


async def note_open(session: AsyncSession, break_ids: Sequence[int], note: str) -> None:
    """Write ``note`` on those of the breaks still open (and not noted so already)."""
    if break_ids:
        await _note_where(
            session,
            and_(BreakItem.id.in_(list(break_ids)), BreakItem.status == BreakStatus.open),
            note,
        )
