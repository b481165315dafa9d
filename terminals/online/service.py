"""Online authorization rules (DESIGN §9; docs/terminal-protocol.md §9).

Every terminal message claims its (terminal, terminal serial) in the one serial space it shares
with purse loads (``terminals.online.messages``): a retry gets the first answer, the same serial
with other content is an ``IdempotencyConflict``. Money moves only through the ledger's
two-phase transactions, from the card holder's online account to the merchant's pending-clearing
account:

=============  =========================================================================
purchase       post resident_account → merchant_pending
preauth        place a hold on resident_account (counterparty merchant_pending)
completion     post the hold (partial allowed; the rest is released)
reversal       undo the named message: reverse its posting, void its hold, or void a pending
               purse load back to its source (``terminals.loads.service.reverse_load``)
refund         post merchant_pending → resident_account (≤ what is left to refund)
=============  =========================================================================

A decline is an answer, not an error: the row keeps its response code and nothing moves (a
refusal by the ledger writes nothing, and the day's allowance it took is given back to the day
that took it).

Message rows are not tracked by the session: the new row is written once as decided
(``_recorded``), and an original a message changes is written where it changes
(``repo.save``). Services never commit; the request does.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.accounts.service import PinCheck
from cardsvc.clearing.service import clearing_date as clearing_date_of
from cardsvc.errors import Conflict
from cardsvc.hsm import HsmClient
from cardsvc.ledger import service as ledger
from cardsvc.ledger.errors import HoldExpired, InsufficientFunds, InvalidStateTransition
from cardsvc.ledger.models import Side
from cardsvc.ledger.schemas import Entry, PostingRequest
from cardsvc.settings import Settings
from terminals.access import service as access
from terminals.access.context import TerminalContext
from terminals.access.service import SignedRequest
from terminals.loads import service as loads
from terminals.online import messages, pins
from terminals.online import repository as repo
from terminals.online.messages import (
    MESSAGES,
    Claim,
    Declined,
    card_refusal,
    local_now,
    merchant_pending,
    request_hash,
    resident_account,
)
from terminals.online.models import AuthStatus, MessageKind, OnlineAuthorization
from terminals.online.repository import CardStanding
from terminals.online.schemas import (
    AuthorizationResponse,
    CompletionRequest,
    PurchaseRequest,
    RefundRequest,
    ResponseCode,
    ReversalRequest,
)
from terminals.registry.models import TerminalKind

P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class Outcome:
    row: OnlineAuthorization
    replayed: bool
    done: bool = False  # already answered (a replay, or a serial reversed before it arrived)
    written: bool = False  # the new row was written as decided with another row's change
    standing: CardStanding | None = None  # the card read with the claim (``_begin``)

    def response(self) -> AuthorizationResponse:
        row = self.row
        return AuthorizationResponse(
            terminal_serial=row.terminal_serial,
            response_code=row.response_code,
            approved=row.response_code == ResponseCode.approved,
            message=MESSAGES.get(row.response_code, "declined"),
            authorization_id=row.id,
            auth_code=row.auth_code,
            approved_amount=row.approved_amount,
            replayed=self.replayed,
        )


def daily_limit(settings: Settings, standing: CardStanding) -> int:
    return settings.online_daily_limits.get(
        str(standing.card_type), settings.online_daily_limit_default
    )


# --- message rows ---------------------------------------------------------------------------


async def _begin(
    session: AsyncSession,
    terminal: TerminalContext,
    kind: MessageKind,
    request: PurchaseRequest | CompletionRequest | ReversalRequest | RefundRequest,
    settings: Settings,
    *,
    standing_of: str | None = None,
    **fields: Any,
) -> Outcome:
    """Claim (terminal, serial) for this message, or return the first answer to it; with
    ``standing_of`` the new claim carries that card's standing (``Outcome.standing``)."""
    claimed = await messages.claim_serial(
        session,
        terminal,
        kind,
        request_hash(kind, request),
        local_now(settings),
        standing_of=standing_of,
        terminal_serial=request.terminal_serial,
        **fields,
    )
    if claimed.claim is Claim.new:
        return Outcome(claimed.row, replayed=False, standing=claimed.standing)
    # A replay, or the first message on a serial reversed before it arrived (the void row: 12).
    return Outcome(claimed.row, replayed=claimed.claim is Claim.replay, done=True)


def _decline(row: OnlineAuthorization, declined: Declined, now: datetime) -> Outcome:
    row.response_code = declined.code.value
    row.decline_reason = declined.reason[:64]
    row.status = AuthStatus.declined
    row.approved_amount = 0
    row.updated_at = now
    return Outcome(row, replayed=False)


def _approve(row: OnlineAuthorization, status: AuthStatus, amount: int, now: datetime) -> Outcome:
    row.response_code = ResponseCode.approved.value
    row.status = status
    row.approved_amount = amount
    row.auth_code = secrets.token_hex(3).upper()
    row.decline_reason = None
    row.updated_at = now
    return Outcome(row, replayed=False)


def _recorded(
    decide: Callable[Concatenate[AsyncSession, P], Coroutine[Any, Any, Outcome]],
) -> Callable[Concatenate[AsyncSession, P], Coroutine[Any, Any, Outcome]]:
    """Write the new message row back once, as decided (``repo.insert_if_new`` hands out a row the
    session does not track); a replay or an answered serial writes nothing."""

    @functools.wraps(decide)
    async def decide_and_record(
        session: AsyncSession, /, *args: P.args, **kwargs: P.kwargs
    ) -> Outcome:
        outcome = await decide(session, *args, **kwargs)
        if not outcome.done and not outcome.written:
            await repo.save(session, outcome.row)
        return outcome

    return decide_and_record


async def _approved_original(
    session: AsyncSession,
    terminal: TerminalContext,
    original_serial: int,
    kinds: tuple[MessageKind, ...],
) -> OnlineAuthorization | None:
    """The terminal's approved message ``original_serial`` of one of ``kinds``, row-locked; None
    when there is none (the caller declines with 25)."""
    original = await repo.by_serial(session, terminal.terminal_no, original_serial, for_update=True)
    return _approved(original, kinds)


def _approved(
    original: OnlineAuthorization | None, kinds: tuple[MessageKind, ...]
) -> OnlineAuthorization | None:
    """``original`` when it is an approved message of one of ``kinds``, else None."""
    if original is None or original.kind not in kinds:
        return None
    return original if original.response_code == ResponseCode.approved else None


def _key(row: OnlineAuthorization, prefix: str = "online") -> str:
    return f"{prefix}:{row.terminal_no}:{row.terminal_serial}"


# --- purchase and pre-authorization ---------------------------------------------------------


async def authorize(
    sessions: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    signed: SignedRequest,
    request: PurchaseRequest,
    *,
    kind: MessageKind,
    hsm: HsmClient,
    settings: Settings,
) -> Outcome:
    """A purchase (posted at once) or a pre-authorization (a hold until completed or expired).

    The PIN is checked first, with nothing held (:func:`pins.check_before_number`); then the sequence number is
    taken, which opens the request's transaction, the PIN try is settled in it, and the message
    is decided, the PIN's verdict counting at its step of the order of checks."""
    if kind not in (MessageKind.purchase, MessageKind.preauth):
        raise ValueError(f"authorize handles purchases and pre-authorizations, not {kind}")
    step = await pins.check_before_number(
        sessions, hsm, signed, settings, asn=request.asn, serial=request.terminal_serial,
        pin_block=request.pin_block, needed=signed.kind is not TerminalKind.validator,
    )  # fmt: skip
    terminal = await access.claim(session, signed)
    check = await pins.settle(session, settings, step)
    return await _authorize(session, terminal, request, step, check, kind=kind, settings=settings)


@_recorded
async def _authorize(
    session: AsyncSession,
    terminal: TerminalContext,
    request: PurchaseRequest,
    step: pins.PinStep,
    check: PinCheck | None,
    *,
    kind: MessageKind,
    settings: Settings,
) -> Outcome:
    now = clock.now()
    # The card is read with the claim unless the PIN step read it (or no card is read at all).
    reads_card = not step.read and terminal.kind is not TerminalKind.validator
    outcome = await _begin(
        session, terminal, kind, request, settings, standing_of=request.asn if reads_card else None,
        amount=request.amount, asn=request.asn.upper(),
    )  # fmt: skip
    if outcome.done:
        return outcome
    row = outcome.row
    if terminal.kind is TerminalKind.validator:
        # Validators debit purses offline; one that asks to charge an account is misused.
        return _decline(
            row, Declined(ResponseCode.not_permitted_to_terminal, "validator_online"), now
        )
    standing = step.standing if step.read else outcome.standing
    refusal = card_refusal(standing, row.local_date)
    if refusal is not None or standing is None:
        return _decline(row, refusal or Declined(ResponseCode.unknown_card, "unknown_card"), now)
    refusal = pins.refusal(request.pin_block, request.amount, check, terminal, settings)
    if refusal is not None:
        row.card_no = standing.card_no
        row.resident_id = standing.resident_id
        return _decline(row, refusal, now)
    row.card_no = standing.card_no
    row.resident_id = standing.resident_id
    clearing_date = await clearing_date_of(
        session, settings, now=now, seen=standing.open_clearing_date
    )
    row.clearing_date = clearing_date
    account = resident_account(standing.resident_id)
    merchant = merchant_pending(terminal.merchant_no)
    expires_at = now + timedelta(seconds=settings.online_hold_expiry_seconds)
    hold_id: int | None = None
    tx_id: int | None = None
    # The daily-usage row first, then the ledger accounts: the lock order of every path here.
    if not await repo.reserve_usage(
        session, standing.card_no, row.local_date, request.amount, daily_limit(settings, standing)
    ):
        return _decline(row, Declined(ResponseCode.exceeds_limit, "daily_limit"), now)
    try:
        if kind is MessageKind.purchase:
            posted = await ledger.post(
                session,
                PostingRequest(
                    idempotency_key=_key(row),
                    tx_type="online_purchase",
                    clearing_date=clearing_date,
                    entries=[
                        Entry(account, Side.debit, request.amount),
                        Entry(merchant, Side.credit, request.amount),
                    ],
                    record_ref=f"online_authorization:{row.id}",
                    description=f"online purchase at {terminal.terminal_no}",
                ),
            )
            tx_id = posted.id
        else:
            hold = await ledger.place_hold(
                session,
                idempotency_key=_key(row, "online-hold"),
                account=account,
                amount=request.amount,
                expires_at=expires_at,
                counterparty=merchant,
                clearing_date=clearing_date,
            )
            hold_id = hold.id
    except InsufficientFunds:
        # The ledger refuses whole and writes nothing; give the day's allowance back.
        await repo.release_usage(session, standing.card_no, row.local_date, request.amount)
        return _decline(row, Declined(ResponseCode.insufficient_funds, "insufficient_funds"), now)
    if kind is MessageKind.purchase:
        row.ledger_transaction_id = tx_id
        return _approve(row, AuthStatus.approved, request.amount, now)
    row.hold_id = hold_id
    row.expires_at = expires_at
    return _approve(row, AuthStatus.held, request.amount, now)


# --- completion -----------------------------------------------------------------------------


@_recorded
async def complete(
    session: AsyncSession,
    terminal: TerminalContext,
    request: CompletionRequest,
    *,
    settings: Settings,
) -> Outcome:
    """Post the pre-authorization's hold for ``amount`` (≤ held); the rest is released."""
    now = clock.now()
    outcome = await _begin(
        session, terminal, MessageKind.completion, request, settings,
        amount=request.amount, original_serial=request.original_serial,
    )  # fmt: skip
    if outcome.done:
        return outcome
    row = outcome.row
    # The pre-authorization, row-locked, with the open clearing day in the same round trip.
    found, open_day = await repo.by_serial_locked_with_open_day(
        session, terminal.terminal_no, request.original_serial
    )
    original = _approved(found, (MessageKind.preauth,))
    if original is None:
        return _decline(row, Declined(ResponseCode.original_not_found, "no_approved_preauth"), now)
    _link(row, original)
    if original.status is not AuthStatus.held or original.hold_id is None:
        return _decline(
            row, Declined(ResponseCode.invalid_transaction, f"preauth_{original.status}"), now
        )
    if request.amount > original.approved_amount:
        return _decline(row, Declined(ResponseCode.invalid_transaction, "above_preauth"), now)
    clearing_date = await clearing_date_of(session, settings, now=now, seen=open_day)
    row.clearing_date = clearing_date
    hold_id = original.hold_id
    try:
        async with session.begin_nested():
            # Lock order everywhere: the card's daily-usage row, then the ledger accounts.
            if original.card_no is not None:
                await repo.release_usage(
                    session,
                    original.card_no,
                    original.local_date,
                    original.approved_amount - request.amount,
                )
            posted = await ledger.post_hold(
                session,
                hold_id,
                request.amount,
                idempotency_key=_key(row),
                clearing_date=clearing_date,
            )
    except HoldExpired:
        await _expire_preauth(session, original, now)
        return _decline(row, Declined(ResponseCode.invalid_transaction, "preauth_expired"), now)
    except InvalidStateTransition:
        return _decline(row, Declined(ResponseCode.invalid_transaction, "hold_not_pending"), now)
    original.status = AuthStatus.completed
    original.updated_at = now
    row.ledger_transaction_id = posted.id
    _approve(row, AuthStatus.approved, request.amount, now)
    # The pre-authorization and the new row in one statement (``_recorded`` writes no more).
    await repo.save_two(session, original, row)
    return Outcome(row, replayed=False, written=True)


def _link(row: OnlineAuthorization, original: OnlineAuthorization) -> None:
    row.original_id = original.id
    row.asn = original.asn
    row.card_no = original.card_no
    row.resident_id = original.resident_id


# --- reversal -------------------------------------------------------------------------------


@_recorded
async def reverse(
    session: AsyncSession,
    terminal: TerminalContext,
    request: ReversalRequest,
    *,
    settings: Settings,
) -> Outcome:
    """Undo the message ``original_serial`` of this terminal (docs/terminal-protocol.md §9.4).

    Answered 00 once nothing of the original stands, with ``approved_amount`` what this reversal
    gave back: 0 when the original never arrived (its serial is then claimed, and the message is
    refused 12 if it comes), was declined, or is already undone. A pending load is voided back to
    its source; the declines are 12 (the original cannot be undone: a confirmed load, a completed
    pre-authorization, a refunded payment, a reversal) and 51 (undoing a refund would take money
    the online account no longer holds).
    """
    now = clock.now()
    outcome = await _begin(
        session, terminal, MessageKind.reversal, request, settings,
        original_serial=request.original_serial,
    )  # fmt: skip
    if outcome.done:
        return outcome
    row = outcome.row
    original = await messages.by_serial(
        session, terminal.terminal_no, request.original_serial, for_update=True
    )
    if original is None:
        void = await messages.claim_void(
            session, terminal, request.original_serial, local_now(settings)
        )
        if void is not None:
            row.decline_reason = "no_original"
            row.original_id = void.id
            return _approve(row, AuthStatus.approved, 0, now)
        # A message took the serial meanwhile (the unique key decided): undo that one.
        original = await messages.by_serial(
            session, terminal.terminal_no, request.original_serial, for_update=True
        )
        if original is None:  # pragma: no cover - the racing insert rolled back
            raise Conflict("original serial is being used concurrently; retry")
    if original.kind is MessageKind.void:
        return _approve(row, AuthStatus.approved, 0, now)  # reversed again: nothing to undo
    _link(row, original)
    row.amount = original.approved_amount
    if original.response_code != ResponseCode.approved or original.status in (
        AuthStatus.reversed, AuthStatus.voided, AuthStatus.expired,
    ):  # fmt: skip
        return _approve(row, AuthStatus.approved, 0, now)
    try:
        if original.kind is MessageKind.load:
            return await _reverse_load(session, row, original, now, settings)
        return await _reverse_payment(session, terminal, request, row, original, now, settings)
    except Declined as declined:
        return _decline(row, declined, now)


async def _reverse_load(
    session: AsyncSession,
    row: OnlineAuthorization,
    original: OnlineAuthorization,
    now: datetime,
    settings: Settings,
) -> Outcome:
    undone = await loads.reverse_load(
        session, original.terminal_no, original.terminal_serial, settings
    )
    if undone.ledger_transaction_id is None:  # the load moved nothing (declined): nothing to undo
        return _approve(row, AuthStatus.approved, 0, now)
    row.clearing_date = undone.clearing_date
    row.ledger_transaction_id = undone.ledger_transaction_id
    original.status = AuthStatus.reversed
    original.updated_at = now
    await messages.record(session, original)
    return _approve(row, AuthStatus.approved, undone.amount, now)


async def _reverse_payment(
    session: AsyncSession,
    terminal: TerminalContext,
    request: ReversalRequest,
    row: OnlineAuthorization,
    original: OnlineAuthorization,
    now: datetime,
    settings: Settings,
) -> Outcome:
    if original.kind is MessageKind.reversal:
        raise Declined(ResponseCode.invalid_transaction, "reversal_of_reversal")
    if original.kind is MessageKind.preauth and original.status is AuthStatus.completed:
        raise Declined(ResponseCode.invalid_transaction, "preauth_completed")
    if original.refunded_amount > 0:
        raise Declined(ResponseCode.invalid_transaction, "original_refunded")
    clearing_date = await clearing_date_of(session, settings, now=now)
    row.clearing_date = clearing_date
    if original.kind is MessageKind.preauth:
        # The day's online spending no longer includes what is undone, on the day the original
        # used. The usage row is locked before the ledger accounts: the lock order of every path.
        await _give_back_usage(session, original, original.approved_amount)
        if original.hold_id is not None:
            await ledger.void_hold(
                session,
                original.hold_id,
                reason=f"reversal {terminal.terminal_no}:{request.terminal_serial}",
            )
        original.status = AuthStatus.voided
    else:
        if original.ledger_transaction_id is None:  # pragma: no cover - approved moves always post
            raise Declined(ResponseCode.system_error, "original_not_posted")
        # Usage row first, then the ledger accounts (the lock order). Only undoing a refund can
        # be refused, and it has no allowance to give back: the ledger then writes nothing.
        await _give_back_usage(session, original, original.approved_amount)
        try:
            posted = await ledger.reverse(
                session,
                original.ledger_transaction_id,
                idempotency_key=_key(row, "online-reversal"),
                clearing_date=clearing_date,
                reason=f"reversal of {original.kind} {terminal.terminal_no}:{original.terminal_serial}",
            )
        except InsufficientFunds:
            # The online account has spent what the refund gave it.
            raise Declined(ResponseCode.insufficient_funds, "refund_spent") from None
        row.ledger_transaction_id = posted.id
        original.status = AuthStatus.reversed
        if original.kind is MessageKind.refund and original.original_id is not None:
            paid = await repo.get(session, original.original_id)
            paid.refunded_amount -= original.approved_amount
            paid.updated_at = now
            await repo.save(session, paid)
    original.updated_at = now
    await repo.save(session, original)
    return _approve(row, AuthStatus.approved, original.approved_amount, now)


async def _give_back_usage(
    session: AsyncSession, original: OnlineAuthorization, amount: int
) -> None:
    """Give ``amount`` of a payment's daily allowance back to the local day that took it: a
    purchase's or pre-authorization's own day; for a completion, its pre-authorization's."""
    if not original.card_no:
        return
    day = original.local_date
    if original.kind is MessageKind.completion and original.original_id is not None:
        day = (await repo.get(session, original.original_id)).local_date
    elif original.kind not in (MessageKind.purchase, MessageKind.preauth):
        return  # refunds and the rest took no allowance
    await repo.release_usage(session, original.card_no, day, amount)


# --- refund ---------------------------------------------------------------------------------


@_recorded
async def refund(
    session: AsyncSession,
    terminal: TerminalContext,
    request: RefundRequest,
    *,
    settings: Settings,
) -> Outcome:
    """Give back (part of) an approved purchase or completion to the online account."""
    now = clock.now()
    outcome = await _begin(
        session, terminal, MessageKind.refund, request, settings,
        amount=request.amount, original_serial=request.original_serial,
    )  # fmt: skip
    if outcome.done:
        return outcome
    row = outcome.row
    original = await _approved_original(
        session, terminal, request.original_serial, (MessageKind.purchase, MessageKind.completion)
    )
    if original is None:
        return _decline(row, Declined(ResponseCode.original_not_found, "no_approved_payment"), now)
    _link(row, original)
    if original.status is not AuthStatus.approved or original.resident_id is None:
        return _decline(
            row, Declined(ResponseCode.invalid_transaction, f"payment_{original.status}"), now
        )
    if request.amount > original.approved_amount - original.refunded_amount:
        return _decline(row, Declined(ResponseCode.invalid_transaction, "above_refundable"), now)
    clearing_date = await clearing_date_of(session, settings, now=now)
    row.clearing_date = clearing_date
    posted = await ledger.post(
        session,
        PostingRequest(
            idempotency_key=_key(row),
            tx_type="online_refund",
            clearing_date=clearing_date,
            entries=[
                Entry(merchant_pending(original.merchant_no), Side.debit, request.amount),
                Entry(resident_account(original.resident_id), Side.credit, request.amount),
            ],
            record_ref=f"online_authorization:{row.id}",
            description=f"refund of {original.terminal_no}:{original.terminal_serial}",
        ),
    )
    original.refunded_amount += request.amount
    original.updated_at = now
    await repo.save(session, original)
    row.ledger_transaction_id = posted.id
    return _approve(row, AuthStatus.approved, request.amount, now)


# --- hold expiry ----------------------------------------------------------------------------


async def _expire_preauth(session: AsyncSession, row: OnlineAuthorization, now: datetime) -> None:
    row.status = AuthStatus.expired
    row.updated_at = now
    await repo.save(session, row)
    if row.card_no is not None:
        await repo.release_usage(session, row.card_no, row.local_date, row.approved_amount)


async def expire_preauths(session: AsyncSession, *, now: datetime | None = None) -> int:
    """Release the holds of pre-authorizations not completed in time; return how many."""
    now = now or clock.now()
    rows = await repo.due_preauths(session, now)
    for row in rows:
        await _expire_preauth(session, row, now)
    # After the usage rows: the lock order of every authorization (usage, then ledger accounts).
    await ledger.expire_holds(session, now)
    return len(rows)
