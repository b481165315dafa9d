"""Billers and bill payments (DESIGN §15, docs/bills.md, docs/biller-protocol.md).

The registry of billers is kept by administrators: each change is audited. A biller's key is
shared with the utility and held by the HSM (usage ``biller-mac``); the registry names it by its
label, and registering or changing it checks with the HSM that the label holds such a key.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.audit import service as audit
from cardsvc.bills import patterns, signing
from cardsvc.bills import repository as repo
from cardsvc.bills.adapter import Answer, BillerClient, BillerEndpoint, NoAnswer
from cardsvc.bills.models import (
    CASH_BACK_STATUSES,
    Biller,
    BillerStatus,
    BillPayment,
    BillPresentment,
    OutboxAction,
    PayerKind,
    PaymentStatus,
    SubChannel,
)
from cardsvc.bills.schemas import BankDetails, BillerChange, BillerIn, FeeRule
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind
from cardsvc.breaks.schemas import BreakRef, NewBreak, Resolve
from cardsvc.clearing.service import clearing_date as clearing_date_of
from cardsvc.db import unit_of_work
from cardsvc.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    IdempotencyConflict,
    InvalidStateTransition,
    NotFound,
    RateLimited,
    ValidationFailed,
)
from cardsvc.hsm import HsmClient, HsmKeyError, HsmUnavailable
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.metrics import BILLER_LATENCY, BILLER_NO_ANSWER
from cardsvc.pgdirect import statements_on_their_own
from cardsvc.settings import Settings

BILLER_KEY_USAGE = "biller-mac"


class BillerSuspended(Conflict):
    """The biller is suspended or closed: no new query or payment."""


class BillerNotAnswering(DependencyUnavailable):
    """The biller gave no trustworthy answer in time (down, timeout, 5xx, bad signature)."""


class BillerBusy(RateLimited):
    """The biller refused the query: too many queries of this bill key a minute."""


class BillKeyInvalid(ValidationFailed):
    """The bill key does not match the biller's pattern (the biller is not asked)."""


class NoSuchCustomer(NotFound):
    """The biller knows no customer with this bill key."""


class NothingDue(Conflict):
    """The customer exists and nothing is unpaid."""


class PresentmentUnknown(NotFound):
    """No presentment with this reference for this biller: query the bill first."""


class PresentmentExpired(Conflict):
    """The presentment's reference is past its expiry: query the bill again."""


class AmountNotAccepted(ValidationFailed):
    """The amount is not the amount due (or outside min_amount … amount_due when partial)."""


class AlreadyPaying(Conflict):
    """A payment of this presentment is in flight or paid."""


class PaymentNotFound(NotFound):
    """No bill payment with this serial (for this payer)."""


class ResultConflict(Conflict):
    """A biller's callback names another result than the one recorded."""


class BadRequest(DomainError):
    """A biller's callback body that is not the protocol's (docs/biller-protocol.md §7)."""

    status_code = 400


class SignatureInvalid(DomainError):
    """A biller's callback whose headers, timestamp or signature do not check."""

    status_code = 401


async def check_key(hsm: HsmClient, label: str) -> None:
    """The HSM holds an active ``biller-mac`` key under ``label`` (asked before any write)."""
    try:
        info = await hsm.key_info(label)
    except HsmUnavailable as exc:
        raise DependencyUnavailable("HSM unavailable") from exc
    except HsmKeyError as exc:
        raise ValidationFailed(f"the HSM holds no key {label}") from exc
    if info.usage != BILLER_KEY_USAGE or info.state != "active":
        raise ValidationFailed(
            f"key {label} must be an active {BILLER_KEY_USAGE} key, not {info.usage} ({info.state})"
        )


def fee_of(biller: Biller, amount: int) -> int:
    """Our fee on one payment of ``amount`` fen: fixed + amount × bps / 10 000 (rounded down),
    capped at fee_max when it is set, and never more than the amount."""
    fee = biller.fee_fixed + amount * biller.fee_bps // 10_000
    if biller.fee_max:
        fee = min(fee, biller.fee_max)
    return min(fee, amount)


def _audit_view(biller: Biller) -> dict[str, object]:
    return {
        "name": biller.name,
        "category": biller.category.value,
        "endpoint": biller.endpoint,
        "key_label": biller.key_label,
        "bill_key_pattern": biller.bill_key_pattern,
        "bank_account_no": biller.bank_account_no,
        "fee": [biller.fee_fixed, biller.fee_bps, biller.fee_max],
        "settlement_cycle": biller.settlement_cycle.value,
        "status": biller.status.value,
    }


def _apply_bank(biller: Biller, bank: BankDetails) -> None:
    biller.bank_name, biller.bank_account_no = bank.bank_name, bank.account_no
    biller.bank_account_name = bank.account_name


def _apply_fee(biller: Biller, fee: FeeRule) -> None:
    biller.fee_fixed, biller.fee_bps, biller.fee_max = fee.fixed, fee.bps, fee.max


async def create_biller(session: AsyncSession, body: BillerIn, *, actor: str) -> Biller:
    """Register a biller (its key checked with the HSM by the caller, :func:`check_key`)."""
    patterns.check(body.bill_key_pattern)
    if await repo.biller_by_code(session, body.code) is not None:
        raise Conflict(f"biller {body.code} exists")
    now = clock.now()
    biller = Biller(
        code=body.code,
        name=body.name,
        category=body.category,
        endpoint=body.endpoint.rstrip("/"),
        key_label=body.key_label,
        bill_key_pattern=body.bill_key_pattern,
        settlement_cycle=body.settlement_cycle,
        status=BillerStatus.active,
        created_at=now,
        updated_at=now,
    )
    _apply_bank(biller, body.bank)
    _apply_fee(biller, body.fee)
    session.add(biller)
    await session.flush()
    await audit.record(
        session, actor=actor, action="bills.biller_create", entity="biller",
        entity_id=biller.code, after=_audit_view(biller),
    )  # fmt: skip
    return biller


async def change_biller(
    session: AsyncSession, code: str, change: BillerChange, *, actor: str
) -> Biller:
    """Change the fields given (a new key label checked with the HSM by the caller)."""
    biller = await get_biller(session, code, for_update=True)
    before = _audit_view(biller)
    if change.bill_key_pattern is not None:
        patterns.check(change.bill_key_pattern)
        biller.bill_key_pattern = change.bill_key_pattern
    if change.name is not None:
        biller.name = change.name
    if change.endpoint is not None:
        biller.endpoint = change.endpoint.rstrip("/")
    if change.key_label is not None:
        biller.key_label = change.key_label
    if change.bank is not None:
        _apply_bank(biller, change.bank)
    if change.fee is not None:
        _apply_fee(biller, change.fee)
    if change.settlement_cycle is not None:
        biller.settlement_cycle = change.settlement_cycle
    biller.updated_at = clock.now()
    await session.flush()
    await audit.record(
        session, actor=actor, action="bills.biller_change", entity="biller",
        entity_id=biller.code, before=before, after=_audit_view(biller),
    )  # fmt: skip
    return biller


async def set_biller_status(
    session: AsyncSession, code: str, status: BillerStatus, *, actor: str
) -> Biller:
    """Suspend, reopen or close a biller; a closed biller stays closed."""
    biller = await get_biller(session, code, for_update=True)
    if biller.status is BillerStatus.closed and status is not BillerStatus.closed:
        raise Conflict(f"biller {code} is closed")
    before = biller.status
    biller.status, biller.updated_at = status, clock.now()
    await session.flush()
    await audit.record(
        session, actor=actor, action="bills.biller_status", entity="biller",
        entity_id=biller.code, before={"status": before.value}, after={"status": status.value},
    )  # fmt: skip
    return biller


async def get_biller(session: AsyncSession, code: str, *, for_update: bool = False) -> Biller:
    biller = await repo.biller_by_code(session, code, for_update=for_update)
    if biller is None:
        raise NotFound(f"no biller {code}")
    return biller


async def active_biller(session: AsyncSession, code: str) -> Biller:
    return _open(code, await get_biller(session, code))


_AnyBiller = TypeVar("_AnyBiller", Biller, repo.BillerEntry)


def _open(code: str, biller: _AnyBiller | None) -> _AnyBiller:
    """The biller when it exists and is active: 404 when it does not, 409 when it is not active."""
    if biller is None:
        raise NotFound(f"no biller {code}")
    if biller.status is not BillerStatus.active:
        raise BillerSuspended(f"biller {code} is {biller.status.value}")
    return biller


async def list_billers(session: AsyncSession, *, status: BillerStatus | None) -> list[Biller]:
    return await repo.billers(session, status=status)


# --- query ----------------------------------------------------------------------------------

QUERY_PATH = "/bills/query"
PAY_PATH = "/bills/payments"
STATUS_PATH = "/bills/status"
REVERSAL_PATH = "/bills/reversals"
REFUND_PATH = "/bills/refunds"

# Holds outlast any outcome (24 h pending, then reversal or refund retried): docs/bills.md §3.3.
HOLD_DAYS = 30
# docs/biller-protocol.md §6: an unknown outcome is asked for this long, then reversed; a
# pending one for 24 hours.
UNKNOWN_WINDOW = timedelta(minutes=15)
PENDING_WINDOW = timedelta(hours=24)
MAX_BACKOFF_SECONDS = 300


def endpoint_of(biller: Biller | repo.BillerEntry) -> BillerEndpoint:
    return BillerEndpoint(biller.code, biller.endpoint, biller.key_label)


def check_bill_key(biller: Biller | repo.BillerEntry, bill_key: str) -> None:
    if not patterns.matches(biller.bill_key_pattern, bill_key):
        raise BillKeyInvalid(
            f"bill key does not match biller {biller.code}'s pattern {biller.bill_key_pattern}"
        )


@dataclass(frozen=True, slots=True)
class Presented:
    biller_code: str
    bill_key: str
    reference: str
    bill_id: str
    holder_masked: str
    amount_due: int
    late_fee: int
    period: str | None
    due_date: date | None
    partial_allowed: bool
    min_amount: int
    expires_at: datetime


_REFERENCE = re.compile(r"^[0-9A-Za-z._-]{1,64}$")
_PERIOD = re.compile(r"^\d{6}$")


def _presented(biller_code: str, bill_key: str, body: dict[str, Any]) -> Presented:
    """The presentment of a signed answer, checked field by field (a malformed one is no
    answer: the resident is told the biller is unavailable)."""
    found = body.get("presentment")
    if not isinstance(found, dict):
        raise NoAnswer("answer: presentment missing")
    try:
        reference, bill_id = str(found["reference"]), str(found["bill_id"])
        amount_due, late_fee = found["amount_due"], found["late_fee"]
        minimum: Any = found.get("min_amount", amount_due)
        partial = found.get("partial_allowed", False)
        holder = str(found.get("holder_masked", ""))[:32]
        period = found.get("period")
        due = found.get("due_date")
        expires = datetime.strptime(str(found["expires_at"]), "%Y-%m-%dT%H:%M:%SZ")
    except (KeyError, ValueError) as exc:
        raise NoAnswer(f"answer: presentment malformed ({type(exc).__name__})") from None
    ints = (amount_due, late_fee, minimum)
    if (
        not _REFERENCE.match(reference)
        or not _REFERENCE.match(bill_id)
        or not all(type(v) is int for v in ints)
        or not 1 <= amount_due <= MAX_AMOUNT
        or not 0 <= late_fee <= amount_due
        or not 1 <= minimum <= amount_due
        or type(partial) is not bool
        or (period is not None and not _PERIOD.match(str(period)))
    ):
        raise NoAnswer("answer: presentment out of range")
    try:
        due_date = date.fromisoformat(str(due)) if due is not None else None
    except ValueError:
        raise NoAnswer("answer: due_date malformed") from None
    return Presented(
        biller_code, bill_key, reference, bill_id, holder, amount_due, late_fee,
        None if period is None else str(period), due_date, partial,
        minimum if partial else amount_due, expires.replace(tzinfo=UTC),
    )  # fmt: skip


async def query_bill(
    sessions: async_sessionmaker[AsyncSession],
    client: BillerClient,
    code: str,
    bill_key: str,
    period: str | None,
) -> Presented:
    """Ask the biller what is due on ``bill_key`` (no database session is open while it
    answers) and keep the presentment. Order of checks: docs/bills.md §4. The read of the biller
    and the keeping of the presentment are one statement each, a transaction of its own on
    PostgreSQL (no BEGIN, no COMMIT)."""
    async with sessions() as read:
        statements_on_their_own(read)
        biller = _open(code, await repo.biller_entry(read, code))
    check_bill_key(biller, bill_key)
    endpoint = endpoint_of(biller)
    payload: dict[str, Any] = {"bill_key": bill_key}
    if period is not None:
        payload["period"] = period
    try:
        answer = await _timed(
            client, endpoint, "query", QUERY_PATH, f"query:{secrets.token_hex(12)}", payload
        )
        if answer.status == 429:
            raise BillerBusy(f"biller {code} refuses more queries of this bill key for now")
        if answer.status != 200:
            raise NoAnswer(f"status {answer.status}")
        if answer.result == "no_such_customer":
            raise NoSuchCustomer(f"biller {code} has no customer {bill_key}")
        if answer.result == "nothing_due":
            raise NothingDue(f"nothing is due on {bill_key}")
        if answer.result != "presented":
            raise NoAnswer(f"answer: result {answer.result!r}")
        found = _presented(biller.code, bill_key, answer.body)
    except NoAnswer as exc:
        raise BillerNotAnswering(f"biller {code} did not answer ({exc.reason})") from None
    except HsmUnavailable as exc:
        raise DependencyUnavailable("HSM unavailable") from exc
    async with unit_of_work(sessions) as write:
        statements_on_their_own(write)
        await repo.keep_presentment(
            write,
            {
                "biller_code": found.biller_code, "bill_key": found.bill_key,
                "reference": found.reference, "bill_id": found.bill_id,
                "holder_masked": found.holder_masked, "amount_due": found.amount_due,
                "late_fee": found.late_fee, "period": found.period, "due_date": found.due_date,
                "partial_allowed": found.partial_allowed, "min_amount": found.min_amount,
                "expires_at": found.expires_at, "created_at": clock.now(),
            },
        )  # fmt: skip
    return found


async def _timed(
    client: BillerClient,
    biller: Biller | BillerEndpoint,
    request: str,
    path: str,
    key: str,
    payload: dict[str, Any],
) -> Answer:
    endpoint = biller if isinstance(biller, BillerEndpoint) else endpoint_of(biller)
    try:
        answer = await client.call(endpoint, path, key, payload)
    except NoAnswer:
        BILLER_NO_ANSWER.labels(endpoint.code, request).inc()
        raise
    BILLER_LATENCY.labels(endpoint.code, request).observe(answer.seconds)
    return answer


# --- payments -------------------------------------------------------------------------------

MAX_AMOUNT = 10**10


@dataclass(frozen=True, slots=True)
class Payer:
    """Who pays, and the scope of the submission's idempotency key."""

    sub_channel: SubChannel
    resident_id: int | None = None  # online and kiosk
    card_no: str | None = None  # kiosk
    terminal_no: str | None = None  # kiosk
    counter_code: str | None = None  # counter
    operator: str | None = None  # counter

    @property
    def scope(self) -> str:
        if self.sub_channel is SubChannel.counter:
            return f"counter:{self.counter_code}"
        if self.sub_channel is SubChannel.kiosk:
            return f"kiosk:{self.terminal_no}"
        return f"resident:{self.resident_id}"

    def account(self) -> AccountRef:
        """The ledger account the money is held on."""
        if self.sub_channel is SubChannel.counter:
            return AccountRef(AccountKind.bill_suspense, str(self.counter_code))
        return AccountRef(AccountKind.resident_account, str(self.resident_id))


@dataclass(frozen=True, slots=True)
class PaymentView:
    payment: BillPayment
    replayed: bool = False


def payer_account(payment: BillPayment) -> AccountRef:
    if payment.payer_kind is PayerKind.counter_cash:
        return AccountRef(AccountKind.bill_suspense, str(payment.counter_code))
    return AccountRef(AccountKind.resident_account, str(payment.resident_id))


def payable(code: str) -> AccountRef:
    return AccountRef(AccountKind.biller_payable, code)


def _request_hash(payer: Payer, code: str, reference: str, amount: int | None) -> str:
    canonical = [
        payer.sub_channel.value, payer.resident_id, payer.card_no, payer.terminal_no,
        payer.counter_code, code, reference, amount,
    ]  # fmt: skip
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()


async def _replay(session: AsyncSession, payer: Payer, key: str, digest: str) -> PaymentView | None:
    found = await repo.payment_by_submit(session, payer.scope, key)
    if found is None:
        return None
    if found.request_hash != digest:
        raise IdempotencyConflict(f"idempotency key {key!r} was used for another payment")
    return PaymentView(found, replayed=True)


async def check_payable(
    session: AsyncSession, biller_code: str, reference: str, amount: int | None
) -> tuple[Biller, BillPresentment, int]:
    """The checks of a payment that need no payer, in the order of docs/bills.md §5: the biller,
    the presentment, the amount, no other payment of it; the amount to pay."""
    biller = await active_biller(session, biller_code)
    presented = await repo.presentment(session, biller_code, reference)
    if presented is None:
        raise PresentmentUnknown(f"no presentment {reference} of biller {biller_code}")
    if presented.expires_at <= clock.now():
        raise PresentmentExpired(f"presentment {reference} expired; query the bill again")
    paying = presented.amount_due if amount is None else amount
    low = presented.min_amount if presented.partial_allowed else presented.amount_due
    if not low <= paying <= presented.amount_due:
        raise AmountNotAccepted(
            f"the amount must be {presented.amount_due}"
            if not presented.partial_allowed
            else f"the amount must be {low} … {presented.amount_due}"
        )
    if await repo.live_payment_of(session, biller_code, reference) is not None:
        raise AlreadyPaying(f"presentment {reference} is being paid or paid")
    return biller, presented, paying


async def submit_payment(
    session: AsyncSession,
    settings: Settings,
    payer: Payer,
    *,
    biller_code: str,
    reference: str,
    amount: int | None,
    key: str,
) -> PaymentView:
    """Accept a payment of a kept presentment: the money held (counter cash first taken into
    ``bill_suspense``), the payment and its outbox row written in the caller's transaction; the
    biller is called after commit by the worker. Order of checks: docs/bills.md §5."""
    digest = _request_hash(payer, biller_code, reference, amount)
    replay = await _replay(session, payer, key, digest)
    if replay is not None:
        return replay
    biller, presented, paying = await check_payable(session, biller_code, reference, amount)
    now = clock.now()
    day = await clearing_date_of(session, settings)
    payment = await repo.insert_payment(
        session,
        sub_channel=payer.sub_channel, biller_id=biller.id, biller_code=biller.code,
        bill_key=presented.bill_key, reference=reference, bill_id=presented.bill_id,
        period=presented.period, amount_due=presented.amount_due, amount=paying,
        payer_kind=PayerKind.counter_cash if payer.sub_channel is SubChannel.counter
        else PayerKind.resident_account,
        resident_id=payer.resident_id, card_no=payer.card_no, terminal_no=payer.terminal_no,
        counter_code=payer.counter_code, operator=payer.operator, clearing_date=day,
        paid_at=now, status=PaymentStatus.pending, submit_scope=payer.scope, submit_key=key,
        request_hash=digest, created_at=now, updated_at=now,
    )  # fmt: skip
    if payment is None:
        # A concurrent submission with this key committed first: its answer is ours.
        raced = await _replay(session, payer, key, digest)
        if raced is None:  # pragma: no cover - the unique key that refused us exists
            raise IdempotencyConflict(f"idempotency key {key!r} is being used; try again")
        return raced
    serial = str(payment.serial)
    # The writes that lock no shared row first: the ledger's postings lock the payer's account
    # (a counter's drawer and suspense are shared by all its payments, and the worker posts from
    # that suspense), and those locks are held until commit, so they come last.
    await repo.add_outbox(session, payment.id, OutboxAction.pay, now)
    if payer.sub_channel is SubChannel.counter:
        await audit.record(
            session, actor=str(payer.operator), action="bills.cash_payment",
            entity="bill_payment", entity_id=serial,
            after={"biller": biller.code, "amount": paying, "counter": payer.counter_code},
        )  # fmt: skip
        cash = await ledger.post(
            session,
            PostingRequest(
                idempotency_key=f"bill-cash:{serial}",
                tx_type="bill_cash_in",
                clearing_date=day,
                entries=[
                    Entry(AccountRef(AccountKind.counter_cash, str(payer.counter_code)),
                          Side.debit, paying),
                    Entry(payer.account(), Side.credit, paying),
                ],
                record_ref=f"bill_payment:{payment.id}",
                description=f"cash for bill {serial} at counter {payer.counter_code}",
            ),
        )  # fmt: skip
        payment.cash_tx_id = cash.id
    hold = await ledger.place_hold(
        session,
        idempotency_key=f"bill-hold:{serial}",
        account=payer.account(),
        amount=paying,
        expires_at=now + timedelta(days=HOLD_DAYS),
        counterparty=payable(biller.code),
        clearing_date=day,
    )
    payment.hold_id = hold.id
    await session.flush()
    return PaymentView(payment)


async def pay_from_account(
    session: AsyncSession,
    settings: Settings,
    resident_id: int,
    *,
    biller_code: str,
    reference: str,
    amount: int | None,
    key: str,
) -> PaymentView:
    """Self-service: the resident pays from the online account (the caller authenticated the
    resident; the resident's route takes it once resident sign-in exists)."""
    return await submit_payment(
        session, settings, Payer(SubChannel.online, resident_id=resident_id),
        biller_code=biller_code, reference=reference, amount=amount, key=key,
    )  # fmt: skip


async def payment_by_serial(
    session: AsyncSession, serial: str, *, resident_id: int | None = None
) -> BillPayment:
    """The payment; with ``resident_id``, only that resident's (another's is not found)."""
    found = await repo.payment_by_serial(session, serial)
    if found is None or (resident_id is not None and found.resident_id != resident_id):
        raise PaymentNotFound(f"no bill payment {serial}")
    return found


async def kiosk_payment(session: AsyncSession, terminal_no: str, serial: int) -> BillPayment | None:
    """The payment a kiosk made with this terminal serial."""
    return await repo.payment_by_submit(
        session, Payer(SubChannel.kiosk, terminal_no=terminal_no).scope, str(serial)
    )


async def payments_of_resident(
    session: AsyncSession, resident_id: int, *, before_id: int | None = None, limit: int = 50
) -> list[BillPayment]:
    return await repo.payments_of_resident(session, resident_id, before_id=before_id, limit=limit)


async def return_cash(
    session: AsyncSession, settings: Settings, serial: str, *, counter_code: str, actor: str
) -> BillPayment:
    """Hand back at the counter the cash of a counter payment that did not pay (failed,
    reversed or refunded): ``bill_suspense`` → ``counter_cash``, once."""
    payment = await repo.payment_by_serial(session, serial, for_update=True)
    if payment is None or payment.payer_kind is not PayerKind.counter_cash:
        raise PaymentNotFound(f"no counter cash payment {serial}")
    if payment.counter_code != counter_code:
        raise Conflict(f"payment {serial} was paid at counter {payment.counter_code}")
    if payment.cash_returned_tx_id is not None:
        return payment
    if payment.status not in CASH_BACK_STATUSES:
        raise InvalidStateTransition(
            f"payment {serial} is {payment.status.visible}: only cash of a payment that did not "
            "pay is handed back"
        )
    day = await clearing_date_of(session, settings)
    posted = await ledger.post(
        session,
        PostingRequest(
            idempotency_key=f"bill-cash-return:{serial}",
            tx_type="bill_cash_return",
            clearing_date=day,
            entries=[
                Entry(payer_account(payment), Side.debit, payment.amount),
                Entry(AccountRef(AccountKind.counter_cash, counter_code), Side.credit,
                      payment.amount),
            ],
            record_ref=f"bill_payment:{payment.id}",
            description=f"cash of bill {serial} handed back at counter {counter_code}",
        ),
    )  # fmt: skip
    payment.cash_returned_tx_id, payment.cash_returned_at = posted.id, clock.now()
    payment.updated_at = payment.cash_returned_at
    await session.flush()
    if payment.cash_aged_at is not None:
        await breaks.resolve_by_key(
            session,
            cash_aged_key(serial),
            Resolve(resolver=actor, resolution="cash_returned",
                    note=f"handed back at counter {counter_code}"),
        )  # fmt: skip
    await audit.record(
        session, actor=actor, action="bills.cash_return", entity="bill_payment",
        entity_id=serial, after={"amount": payment.amount, "counter": counter_code},
    )  # fmt: skip
    return payment


def cash_aged_key(serial: str) -> str:
    return f"bill_cash_aged:{serial}"


AGEING_BATCH = 500


async def age_unreturned_cash(session: AsyncSession, settings: Settings, now: datetime) -> int:
    """Open a ``bill_cash_unreturned`` break for each counter payment that did not pay and whose
    cash is still in the counter's suspense ``CARDSVC_BILL_CASH_BREAK_AFTER_SECONDS`` after its
    end (at most a batch per call); the cash stays until it is handed back, which closes the
    break. How many aged."""
    before = now - timedelta(seconds=settings.bill_cash_break_after_seconds)
    rows = await repo.unreturned_cash(session, before, AGEING_BATCH)
    if not rows:
        return 0
    day = await clearing_date_of(session, settings)
    for payment in rows:
        assert payment.decided_at is not None  # noqa: S101 - selected by it
        payment.cash_aged_at = now
        await breaks.open_break(
            session,
            NewBreak(
                kind=BreakKind.bill_cash_unreturned,
                clearing_date=day,
                reason=(
                    f"counter {payment.counter_code}: cash of bill {payment.serial} (biller "
                    f"{payment.biller_code}, {payment.status.value} "
                    f"{payment.decided_at.isoformat(timespec='seconds')}) not handed back"
                )[:200],
                ref=BreakRef(source="bill_payment", source_id=payment.id,
                             reference=str(payment.serial)),
                amount=payment.amount,
                open_key=cash_aged_key(str(payment.serial)),
            ),
        )  # fmt: skip
    await session.flush()
    return len(rows)


# --- callbacks ------------------------------------------------------------------------------


async def callback_biller(session: AsyncSession, code: str) -> Biller:
    """The biller a callback names; one we do not know cannot be verified (401)."""
    biller = await repo.biller_by_code(session, code)
    if biller is None:
        raise SignatureInvalid("unknown biller")
    return biller


async def verify_callback(
    hsm: HsmClient,
    settings: Settings,
    biller: Biller,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> signing.Envelope:
    """Checks 1–3 of docs/biller-protocol.md §2.1 on a callback, before its body is parsed."""
    try:
        envelope = signing.envelope_of(headers, settings.bills_channel_id, biller.code, clock.now())
    except signing.BadSignature as exc:
        raise SignatureInvalid(exc.reason) from None
    data = signing.signed_string("POST", path, envelope.timestamp, envelope.key, body)
    try:
        good = await signing.verify(hsm, biller.key_label, data, envelope.signature)
    except HsmUnavailable as exc:
        raise DependencyUnavailable("HSM unavailable") from exc
    if not good:
        raise SignatureInvalid("the signature does not verify")
    return envelope


async def sign_answer(
    hsm: HsmClient,
    settings: Settings,
    biller: Biller,
    path: str,
    key: str,
    status: int,
    body: bytes,
) -> dict[str, str]:
    """The signed headers of our answer to a callback (§2: answers are signed too)."""
    stamp = signing.timestamp(clock.now())
    try:
        signature = await signing.sign(
            hsm, biller.key_label, signing.signed_string(str(status), path, stamp, key, body)
        )
    except HsmUnavailable as exc:
        raise DependencyUnavailable("HSM unavailable") from exc
    return signing.Envelope(settings.bills_channel_id, biller.code, stamp, key, signature).headers()


async def payment_count(session: AsyncSession, biller_code: str) -> int:
    """How many payments the biller was ever sent (whatever their state)."""
    return await repo.payment_count(session, biller_code)
