"""The bill payments' outbox worker (docs/bills.md §6): sends what each payment in flight is
waiting for (the payment, a status query, a reversal or a refund) and records the answer.

Each row goes through three steps, each in its own short transaction, and the biller is called
between them with no transaction open:

1. *lease* (one transaction for a batch): due rows are leased to this worker until
   ``lease_until``; a worker that dies leaves its leases to run out, and the rows are taken
   again (every request to a biller is idempotent by its key, so a repeat is harmless);
2. *call*: the request of the row's action, signed by the HSM;
3. *record*: under the payment's row lock, the answer moves the payment on (the hold posted or
   voided when it is final, the outbox row removed) or the row is rescheduled with backoff.

A crash between 1 and 2 or between 2 and 3 loses nothing: the row is still there, and the repeat
of its request is answered with the first answer.

The rows of one lease are sent concurrently, at most ``CARDSVC_BILLS_OUTBOX_CONCURRENCY`` at once:
each row is its own call, recorded as soon as its answer comes, so a slow biller delays only its
rows; answers that come while a record transaction is open are recorded together in the next.
The long-running worker keeps its HSM connection and HTTP client open across runs, and is woken
when a payment commits (the outbox's notification channel, on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.bills import repository as repo
from cardsvc.bills import service
from cardsvc.bills.adapter import Answer, BillerClient, BillerEndpoint, NoAnswer, biller_http
from cardsvc.bills.models import Biller, BillOutbox, BillPayment, OutboxAction, PaymentStatus
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind
from cardsvc.breaks.schemas import BreakRef, NewBreak
from cardsvc.clearing.service import clearing_date as clearing_date_of
from cardsvc.db import unit_of_work
from cardsvc.hsm import HsmUnavailable
from cardsvc.hsm.connect import open_hsm_on_first_use
from cardsvc.jobs.worker import Job, Run
from cardsvc.ledger import service as ledger
from cardsvc.ledger.errors import HoldExpired
from cardsvc.ledger.models import Side
from cardsvc.ledger.schemas import Entry, PostingRequest
from cardsvc.logging import get_logger
from cardsvc.metrics import BILL_OUTBOX_DEPTH, BILL_OUTBOX_OLDEST_SECONDS, BILL_PAYMENTS
from cardsvc.resources import Storage
from cardsvc.settings import Settings

log = get_logger(__name__)

# For tests of the crash points: the step after which a run stops as if the process died.
CRASH_POINTS = ("after_lease", "after_call")


class Crashed(Exception):
    """Raised at a crash point (tests only): nothing after it runs."""


def backoff(attempts: int) -> timedelta:
    """2, 4, 8 … seconds after the n-th attempt, at most 5 minutes."""
    return timedelta(seconds=min(2 * 2 ** max(attempts - 1, 0), service.MAX_BACKOFF_SECONDS))


def worker_name() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a leased row, composed in the lease step."""

    payment_id: int
    action: OutboxAction
    endpoint: BillerEndpoint
    path: str
    key: str
    payload: dict[str, Any]


def _lease_seconds(settings: Settings) -> float:
    # Long enough for the call and the record step; a worker that died frees its rows after it.
    return settings.bills_timeout_seconds * 3 + 30


async def _compose(
    session: AsyncSession, settings: Settings, payment: BillPayment, row: BillOutbox, biller: Biller
) -> Request:
    serial = str(payment.serial)
    endpoint = service.endpoint_of(biller)
    if row.action is OutboxAction.pay:
        payload: dict[str, Any] = {
            "serial": serial, "reference": payment.reference, "bill_key": payment.bill_key,
            "amount": payment.amount, "sub_channel": payment.sub_channel.value,
            "paid_at": payment.paid_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "date": payment.clearing_date.isoformat(),
        }  # fmt: skip
        return Request(payment.id, row.action, endpoint, service.PAY_PATH, f"pay:{serial}", payload)
    if row.action is OutboxAction.status:
        key = f"status:{serial}:{row.attempts + 1}"
        return Request(
            payment.id, row.action, endpoint, service.STATUS_PATH, key, {"serial": serial}
        )
    if row.action is OutboxAction.reverse:
        payload = {
            "serial": serial, "bill_key": payment.bill_key, "amount": payment.amount,
            "reason": payment.reason or "no_answer",
        }  # fmt: skip
        return Request(
            payment.id, row.action, endpoint, service.REVERSAL_PATH, f"reversal:{serial}", payload
        )
    refund_serial = str(payment.refund_serial)
    if payment.refund_date is None:
        # The refund is made on the day it is first sent; a repeat keeps that date.
        payment.refund_date = await clearing_date_of(session, settings)
    payload = {
        "refund_serial": refund_serial, "original_serial": serial,
        "bill_key": payment.bill_key, "amount": payment.amount,
        "date": payment.refund_date.isoformat(),
    }  # fmt: skip
    return Request(
        payment.id, row.action, endpoint, service.REFUND_PATH, f"refund:{refund_serial}", payload
    )


async def lease(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, now: datetime, owner: str
) -> list[Request]:
    """Step 1: lease the due rows and compose their requests (one transaction)."""
    until = now + timedelta(seconds=_lease_seconds(settings))
    requests: list[Request] = []
    async with unit_of_work(sessions) as session:
        ids = await repo.lease_outbox(
            session, now=now, owner=owner, until=until, limit=settings.bills_outbox_batch
        )
        for payment, row, biller in await repo.leased_rows(session, ids) if ids else []:
            if row.action is OutboxAction.pay and payment.first_sent_at is None:
                payment.first_sent_at = now
            requests.append(await _compose(session, settings, payment, row, biller))
    return requests


async def call(client: BillerClient, request: Request) -> Answer | NoAnswer:
    """Step 2: the request, with no transaction open. An HSM outage propagates."""
    try:
        return await service._timed(
            client, request.endpoint, request.action.value, request.path, request.key,
            request.payload,
        )  # fmt: skip
    except NoAnswer as exc:
        return exc


# --- step 3 ---------------------------------------------------------------------------------


async def _finish(
    session: AsyncSession,
    settings: Settings,
    payment: BillPayment,
    status: PaymentStatus,
    *,
    receipt_no: str | None = None,
    reason: str | None = None,
    detail: str | None = None,
) -> None:
    """Make the payment final: the hold posted (paid, refunded) or voided; the row removed."""
    now = clock.now()
    serial = str(payment.serial)
    assert payment.hold_id is not None  # noqa: S101 - every payment is held when accepted
    # The row first: the ledger's postings lock accounts other payments share (a counter's
    # suspense, the biller's payable) until commit, so they come last.
    await repo.delete_outbox(session, payment.id)
    if status in (PaymentStatus.paid, PaymentStatus.refunded):
        day = await clearing_date_of(session, settings)
        try:
            posted = await ledger.post_hold(
                session, payment.hold_id, payment.amount, idempotency_key=f"bill:{serial}",
                clearing_date=day, tx_type="bill_payment",
                record_ref=f"bill_payment:{payment.id}",
            )  # fmt: skip
        except HoldExpired:
            # The hold ran out (released, or past its expiry): the posting wrote nothing.
            await _expired(session, settings, payment, status, receipt_no=receipt_no)
            return
        payment.pay_tx_id, payment.posted_date = posted.id, day
        if receipt_no is not None and status is PaymentStatus.paid:
            payment.receipt_no = receipt_no
    else:
        await ledger.void_hold(session, payment.hold_id, reason=f"bill {serial} {status.value}")
    if status is PaymentStatus.refunded:
        day = await clearing_date_of(session, settings)
        refund = await ledger.post(
            session,
            PostingRequest(
                idempotency_key=f"bill-refund:{payment.refund_serial}",
                tx_type="bill_refund",
                clearing_date=day,
                entries=[
                    Entry(service.payable(payment.biller_code), Side.debit, payment.amount),
                    Entry(service.payer_account(payment), Side.credit, payment.amount),
                ],
                record_ref=f"bill_payment:{payment.id}",
                description=f"refund {payment.refund_serial} of bill {serial}",
            ),
        )
        # From now on the refund's date is its ledger's, the day the reconciliation file lists
        # it on; until now it was the date of its first sending, which its repeats carried.
        payment.refund_tx_id, payment.refund_receipt_no = refund.id, receipt_no
        payment.refund_date = day
    if reason is not None:
        payment.reason = reason[:32]
    if detail is not None:
        payment.detail = detail[:255]
    payment.status, payment.decided_at, payment.updated_at = status, now, now
    await session.flush()
    BILL_PAYMENTS.labels(payment.biller_code, status.value).inc()
    log.info("bills.payment_final", serial=serial, biller=payment.biller_code, status=status.value)


def expired_key(serial: str) -> str:
    return f"bill_hold_expired:{serial}"


async def _expired(
    session: AsyncSession,
    settings: Settings,
    payment: BillPayment,
    decided: PaymentStatus,
    *,
    receipt_no: str | None,
) -> None:
    """The biller's success or refund came after the hold ran out: the money it held was
    released (to the resident's account, or the counter's suspense), so nothing can be posted.
    The payment ends ``expired``, its row leaves the outbox (asking again would change nothing),
    and a break tells finance, who settles it with the biller and the payer. The caller removed
    the row."""
    now = clock.now()
    serial = str(payment.serial)
    assert payment.hold_id is not None  # noqa: S101 - every payment is held when accepted
    # A hold past its expiry that the expiry job has not reached yet is released here.
    await ledger.void_hold(session, payment.hold_id, reason=f"bill {serial} expired")
    if decided is PaymentStatus.paid:
        payment.receipt_no = receipt_no
        what = f"success (receipt {receipt_no})"
    else:
        payment.refund_receipt_no = receipt_no
        what = f"refund {payment.refund_serial}"
    payment.reason = "hold_expired"
    payment.status, payment.decided_at, payment.updated_at = PaymentStatus.expired, now, now
    await breaks.open_break(
        session,
        NewBreak(
            kind=BreakKind.bill_hold_expired,
            clearing_date=await clearing_date_of(session, settings),
            reason=(
                f"biller {payment.biller_code}, bill {payment.bill_key}, serial {serial}: the "
                f"biller's {what} came after the hold ran out; nothing was taken from the payer"
            )[:200],
            ref=BreakRef(source="bill_payment", source_id=payment.id, reference=serial),
            amount=payment.amount,
            open_key=expired_key(serial),
        ),
    )
    await session.flush()
    BILL_PAYMENTS.labels(payment.biller_code, PaymentStatus.expired.value).inc()
    log.warning("bills.payment_expired", serial=serial, biller=payment.biller_code)


async def _start_undoing(
    session: AsyncSession, settings: Settings, payment: BillPayment, row: BillOutbox, reason: str
) -> None:
    """Undo an outcome that stayed unknown: a reversal while the payment's day is open, a
    refund once it is cut (docs/biller-protocol.md §6)."""
    now = clock.now()
    payment.reason = reason
    if await clearing_date_of(session, settings) == payment.clearing_date:
        payment.status, row.action = PaymentStatus.reversing, OutboxAction.reverse
    else:
        payment.status, row.action = PaymentStatus.refunding, OutboxAction.refund
        payment.refund_serial = f"R{payment.id:011d}"
    payment.updated_at = row.updated_at = now
    row.attempts, row.next_attempt_at = 0, now
    await repo.notify_outbox(session)


def _reason_of(error: str) -> str:
    if error.startswith("timeout"):
        return "timeout"
    if error.startswith(("signature", "answer")):
        return "bad_answer"
    return "no_answer"


def _retry(row: BillOutbox, error: str, now: datetime) -> None:
    row.attempts += 1
    row.next_attempt_at = now + backoff(row.attempts)
    row.last_error = error[:255]
    row.updated_at = now


async def _decide(
    session: AsyncSession,
    settings: Settings,
    payment: BillPayment,
    row: BillOutbox,
    result: str,
    body: dict[str, Any],
) -> bool:
    """A final answer of a payment or status query (success, failure, reversed, refunded):
    True when it made the payment final."""
    receipt = body.get("receipt_no")
    receipt_no = str(receipt)[:64] if isinstance(receipt, str) and receipt else None
    if result == "success" and receipt_no is not None:
        await _finish(session, settings, payment, PaymentStatus.paid, receipt_no=receipt_no)
        return True
    if result == "failure":
        reason = body.get("reason")
        detail = body.get("detail")
        await _finish(
            session, settings, payment, PaymentStatus.failed,
            reason=str(reason) if isinstance(reason, str) else "refused",
            detail=detail if isinstance(detail, str) else None,
        )  # fmt: skip
        return True
    if result == "reversed":
        await _finish(session, settings, payment, PaymentStatus.reversed)
        return True
    return False


async def record_all(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    answered: Sequence[tuple[Request, Answer | NoAnswer]],
) -> list[PaymentStatus | None]:
    """Step 3 of several rows in one transaction: their payments and rows locked first (one
    statement, in payment id order), then each answer applied; each payment's state after it.
    A crash or an error before the commit leaves every one of them in the outbox, sent again
    with its key when its lease runs out."""
    now = clock.now()
    async with unit_of_work(sessions) as session:
        locked = await repo.payments_and_outboxes(session, [r.payment_id for r, _o in answered])
        states: list[PaymentStatus | None] = []
        for request, outcome in answered:
            payment, row = locked.get(request.payment_id, (None, None))
            if payment is None or row is None or row.action is not request.action:
                # Someone (a callback, another worker after our lease ran out) got there first.
                states.append(None if payment is None else payment.status)
                continue
            row.lease_owner = row.lease_until = None
            if isinstance(outcome, NoAnswer) or outcome.status != 200:
                error = (
                    outcome.reason if isinstance(outcome, NoAnswer) else f"status {outcome.status}"
                )
                await _no_answer(session, settings, payment, row, error, now)
            else:
                await _answered(session, settings, payment, row, outcome.result, outcome.body, now)
            states.append(payment.status)
        return states


class _Recorder:
    """The record steps of one pass, committed together: an answer that comes while a record
    transaction is open waits for it and goes into the next, with every other answer that came
    meanwhile (one transaction, one commit and one turn on the shared accounts' locks for all
    of them, instead of one each)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._lock = asyncio.Lock()
        self._waiting: list[
            tuple[Request, Answer | NoAnswer, asyncio.Future[PaymentStatus | None]]
        ] = []

    async def record(self, request: Request, outcome: Answer | NoAnswer) -> PaymentStatus | None:
        done: asyncio.Future[PaymentStatus | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, outcome, done))
        async with self._lock:
            if not done.done():
                batch, self._waiting = self._waiting, []
                try:
                    states = await record_all(
                        self._sessions, self._settings, [(r, o) for r, o, _f in batch]
                    )
                except Exception as exc:
                    for _r, _o, waiting in batch:
                        waiting.set_exception(exc)
                else:
                    for (_r, _o, waiting), state in zip(batch, states, strict=True):
                        waiting.set_result(state)
        return await done


async def _no_answer(
    session: AsyncSession,
    settings: Settings,
    payment: BillPayment,
    row: BillOutbox,
    error: str,
    now: datetime,
) -> None:
    if row.action is OutboxAction.pay:
        payment.status, row.action, row.attempts = PaymentStatus.unknown, OutboxAction.status, 0
        payment.reason, payment.updated_at = _reason_of(error), now
        _retry(row, error, now)
        return
    if row.action is OutboxAction.status and _overdue(payment, now):
        await _start_undoing(session, settings, payment, row, payment.reason or "no_answer")
        row.last_error = error[:255]
        return
    _retry(row, error, now)


def _overdue(payment: BillPayment, now: datetime) -> bool:
    if payment.status is PaymentStatus.biller_pending and payment.biller_pending_at is not None:
        return now - payment.biller_pending_at >= service.PENDING_WINDOW
    sent = payment.first_sent_at or payment.created_at
    return now - sent >= service.UNKNOWN_WINDOW


async def _answered(
    session: AsyncSession,
    settings: Settings,
    payment: BillPayment,
    row: BillOutbox,
    result: str,
    body: dict[str, Any],
    now: datetime,
) -> None:
    if row.action in (OutboxAction.pay, OutboxAction.status):
        if await _decide(session, settings, payment, row, result, body):
            return
        if result == "pending":
            if payment.biller_pending_at is None:
                payment.biller_pending_at = now
            payment.status, payment.updated_at = PaymentStatus.biller_pending, now
            if row.action is OutboxAction.pay:
                row.action, row.attempts = OutboxAction.status, 0
            if _overdue(payment, now):
                await _start_undoing(session, settings, payment, row, "no_answer")
                return
            _retry(row, "pending", now)
            return
        if result == "unknown_serial" or result == "refunded":
            # Never received: reversed at once (which bars the serial). A refund we did not
            # send cannot be (refunds are ours): asked again the same way.
            await _start_undoing(session, settings, payment, row, payment.reason or "no_answer")
            return
        await _no_answer(session, settings, payment, row, f"answer: result {result!r}", now)
        return
    if row.action is OutboxAction.reverse:
        if result == "reversed":
            await _finish(session, settings, payment, PaymentStatus.reversed)
            return
        if result == "refused" and body.get("reason") == "after_cut":
            payment.status, row.action = PaymentStatus.refunding, OutboxAction.refund
            payment.refund_serial = f"R{payment.id:011d}"
            row.attempts, row.next_attempt_at, payment.updated_at = 0, now, now
            await repo.notify_outbox(session)
            return
        _retry(row, f"answer: result {result!r}", now)
        return
    # refund
    if result == "refunded":
        receipt = body.get("receipt_no")
        await _finish(
            session, settings, payment, PaymentStatus.refunded,
            receipt_no=str(receipt)[:64] if isinstance(receipt, str) else None,
        )  # fmt: skip
        return
    if result == "not_paid":
        await _finish(session, settings, payment, PaymentStatus.reversed)
        return
    _retry(row, f"answer: result {result!r}", now)


# --- callbacks ------------------------------------------------------------------------------


async def apply_callback(
    session: AsyncSession, settings: Settings, biller_code: str, body: dict[str, Any]
) -> None:
    """A biller's decision of a pending payment (docs/biller-protocol.md §7), idempotent: a
    decision already recorded is acknowledged again; another decision is ResultConflict."""
    serial, result = body["serial"], body["result"]
    payment = await repo.payment_by_serial(session, serial, for_update=True)
    if payment is None or payment.biller_code != biller_code:
        raise service.PaymentNotFound(f"no payment {serial} of biller {biller_code}")
    expected = PaymentStatus.paid if result == "success" else PaymentStatus.failed
    if payment.status is PaymentStatus.expired and expected is PaymentStatus.paid:
        # The success recorded after the hold ran out: the same success is acknowledged again.
        expected = PaymentStatus.expired
    if payment.status.final:
        if payment.status is not expected or (
            expected is not PaymentStatus.failed and payment.receipt_no != body.get("receipt_no")
        ):
            raise service.ResultConflict(
                f"payment {serial} is {payment.status.value}, not {expected.value}"
            )
        return
    if payment.status in (PaymentStatus.reversing, PaymentStatus.refunding):
        return  # our reversal or refund is under way: its answer decides
    row = await repo.outbox_of(session, payment.id, for_update=True)
    assert row is not None  # noqa: S101 - a payment in flight has its row
    await _decide(session, settings, payment, row, result, body)


# --- the job --------------------------------------------------------------------------------


async def observe_outbox(session: AsyncSession, now: datetime) -> int:
    depth, oldest = await repo.outbox_depth(session)
    BILL_OUTBOX_DEPTH.set(depth)
    BILL_OUTBOX_OLDEST_SECONDS.set(0 if oldest is None else (now - oldest).total_seconds())
    return depth


async def run_outbox(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    client: BillerClient,
    now: datetime,
    *,
    owner: str | None = None,
    crash_at: str | None = None,
) -> dict[str, int]:
    """One pass: lease the due rows, then call and record each, concurrently (at most
    ``bills_outbox_concurrency`` at once). Counts of the outcomes."""
    owner = owner or worker_name()
    requests = await lease(sessions, settings, now, owner)
    if crash_at == "after_lease" and requests:
        raise Crashed("after_lease")
    gate = asyncio.Semaphore(settings.bills_outbox_concurrency)
    recorder = _Recorder(sessions, settings)

    async def send(request: Request) -> str:
        async with gate:
            try:
                outcome = await call(client, request)
            except HsmUnavailable:
                # Not sent (or its answer not checked): the lease runs out and the row is taken
                # again; nothing was decided.
                return "hsm_unavailable"
            if crash_at == "after_call":
                raise Crashed("after_call")
            status = await recorder.record(request, outcome)
            return "gone" if status is None else status.value

    # Every row finishes its own record step before an error of another row is raised.
    results = await asyncio.gather(*(send(r) for r in requests), return_exceptions=True)
    counts: dict[str, int] = {}
    for result in results:
        if isinstance(result, str):
            counts[result] = counts.get(result, 0) + 1
    for result in results:
        if isinstance(result, BaseException):
            raise result
    async with sessions() as session:
        await observe_outbox(session, clock.now())
    return counts


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing due"


@asynccontextmanager
async def kept_open(storage: Storage) -> AsyncIterator[Run]:
    """The long-running worker's runs: one HSM connection and one HTTP client for all of them
    (both reopen what they lose), closed when the worker stops."""
    settings = storage.settings
    async with open_hsm_on_first_use(settings) as hsm, biller_http() as http:
        client = BillerClient(http, hsm, settings.bills_channel_id, settings.bills_timeout_seconds)

        async def run(storage: Storage, now: datetime) -> str:
            return _summary(await run_outbox(storage.sessions, storage.settings, client, now))

        yield run


async def _run(storage: Storage, now: datetime) -> str:
    """One run on its own (``cardsvc worker --once``, the job's command)."""
    async with kept_open(storage) as run:
        return await run(storage, now)


BILL_OUTBOX = Job(
    name="bill-outbox",
    interval=lambda s: s.worker_bills_interval_seconds,
    run=_run,
    kept_open=kept_open,
    wake_on=repo.OUTBOX_CHANNEL,
)


# --- counter cash not handed back -----------------------------------------------------------


async def age_unreturned_cash(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, now: datetime
) -> int:
    """One unit of work per batch of aged payments; how many opened their break."""
    total = 0
    while True:
        async with unit_of_work(sessions) as session:
            aged = await service.age_unreturned_cash(session, settings, now)
        total += aged
        if aged < service.AGEING_BATCH:
            return total


async def _age_cash(storage: Storage, now: datetime) -> str:
    count = await age_unreturned_cash(storage.sessions, storage.settings, now)
    return f"{count} counter bill payment(s) whose cash was not handed back opened a break"


AGE_BILL_CASH = Job(
    name="age-bill-cash",
    interval=lambda s: s.worker_bill_cash_ageing_interval_seconds,
    run=_age_cash,
)
