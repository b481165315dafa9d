"""Online authorization rules (DESIGN §9).

Every terminal message is one row keyed by (terminal, terminal serial): a retry gets the first
answer, the same serial with other content is an ``IdempotencyConflict``. Money moves only
through the ledger's two-phase transactions, from the card holder's online account to the
merchant's pending-clearing account:

=============  =========================================================================
purchase       post resident_account → merchant_pending
preauth        place a hold on resident_account (counterparty merchant_pending)
completion     post the hold (partial allowed; the rest is released)
reversal       undo the named message: reverse its posting or void its hold
refund         post merchant_pending → resident_account (≤ what is left to refund)
=============  =========================================================================

A decline is an answer, not an error: the row keeps its response code and nothing moves (a
refusal by the ledger writes nothing, and the day's allowance it took is given back).

Message rows are not tracked by the session: the new row is written once as decided
(``_recorded``), and an original a message changes is written where it changes
(``repo.save``). Services never commit; the request does.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Concatenate, ParamSpec

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.cards.models import CardStatus
from cardsvc.clearing.service import clearing_date as clearing_date_of
from cardsvc.errors import IdempotencyConflict
from cardsvc.ledger import service as ledger
from cardsvc.ledger.errors import HoldExpired, InsufficientFunds, InvalidStateTransition
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.settings import Settings
from terminals.access.context import TerminalContext
from terminals.online import repository as repo
from terminals.online.models import AuthStatus, MessageKind, OnlineAuthorization
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

MESSAGES: dict[str, str] = {
    ResponseCode.approved: "approved",
    ResponseCode.invalid_transaction: "invalid transaction",
    ResponseCode.unknown_card: "unknown card",
    ResponseCode.original_not_found: "original not found",
    ResponseCode.lost_card: "lost card",
    ResponseCode.insufficient_funds: "insufficient funds",
    ResponseCode.expired_card: "expired card",
    ResponseCode.wrong_pin: "wrong PIN",
    ResponseCode.not_permitted_to_terminal: "transaction not permitted to terminal",
    ResponseCode.exceeds_limit: "exceeds limit",
    ResponseCode.restricted_card: "restricted card",
    ResponseCode.unavailable: "service unavailable",
    ResponseCode.system_error: "system error",
}


class Declined(Exception):
    """Raised inside a savepoint to undo it and answer with a decline code."""

    def __init__(self, code: ResponseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Outcome:
    row: OnlineAuthorization
    replayed: bool
    done: bool = False  # already answered (a replay, or a serial reversed before it arrived)

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


# --- shared with purse loads ----------------------------------------------------------------


def local_now(settings: Settings, now: datetime | None = None) -> datetime:
    """Wall-clock time of the city (DESIGN §5: card and terminal times are local)."""
    return (now or clock.now()).astimezone(settings.zone)


def request_hash(kind: str, request: BaseModel) -> str:
    body = json.dumps(
        {"kind": kind, **request.model_dump(mode="json")}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()


def card_refusal(standing: repo.CardStanding | None, today: date) -> Declined | None:
    """Why this card may not pay or load online, as a decline; None when it may."""
    if standing is None:
        return Declined(ResponseCode.unknown_card, "unknown_card")
    if standing.status is CardStatus.lost:
        return Declined(ResponseCode.lost_card, "card_lost")
    if standing.status is CardStatus.expired or (
        standing.expires_on is not None and standing.expires_on < today
    ):
        return Declined(ResponseCode.expired_card, "card_expired")
    if standing.status is not CardStatus.active:
        return Declined(ResponseCode.restricted_card, f"card_{standing.status}")
    if standing.blacklisted:
        return Declined(ResponseCode.restricted_card, "card_blacklisted")
    return None


def resident_account(resident_id: int) -> AccountRef:
    return AccountRef(AccountKind.resident_account, str(resident_id))


def merchant_pending(merchant_no: str) -> AccountRef:
    return AccountRef(AccountKind.merchant_pending, merchant_no)


def daily_limit(settings: Settings, standing: repo.CardStanding) -> int:
    return settings.online_daily_limits.get(
        str(standing.card_type), settings.online_daily_limit_default
    )


# --- message rows ---------------------------------------------------------------------------


async def _begin(
    session: AsyncSession,
    terminal: TerminalContext,
    kind: MessageKind,
    request: PurchaseRequest | CompletionRequest | ReversalRequest | RefundRequest,
    now: datetime,
    settings: Settings,
    **fields: Any,
) -> Outcome:
    """Claim (terminal, serial) for this message, or return the first answer to it."""
    digest = request_hash(kind, request)
    values: dict[str, Any] = {
        "terminal_id": terminal.terminal_id,
        "terminal_no": terminal.terminal_no,
        "terminal_serial": request.terminal_serial,
        "merchant_no": terminal.merchant_no,
        "merchant_category": terminal.merchant_category,
        "kind": kind,
        "request_hash": digest,
        "amount": fields.pop("amount", 0),
        "approved_amount": 0,
        "refunded_amount": 0,
        # Placeholder until decided below, in the same database transaction.
        "response_code": ResponseCode.system_error.value,
        "status": AuthStatus.declined,
        "local_date": local_now(settings, now).date(),
        "created_at": now,
        "updated_at": now,
        **fields,
    }
    new = await repo.insert_if_new(session, values)
    if new is not None:
        return Outcome(new, replayed=False)
    existing = await repo.by_serial(session, terminal.terminal_no, request.terminal_serial)
    if existing is None:  # pragma: no cover - the conflicting insert rolled back
        raise IdempotencyConflict("terminal serial is being used concurrently; retry")
    if existing.kind is MessageKind.void:
        # A reversal named this serial before the message itself arrived: refused (code 12).
        return Outcome(existing, replayed=False, done=True)
    if existing.request_hash != digest:
        raise IdempotencyConflict(
            f"terminal serial {request.terminal_serial} was used for another message",
            authorization_id=existing.id,
        )
    return Outcome(existing, replayed=True, done=True)


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
        if not outcome.done:
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
    if original is None or original.kind not in kinds:
        return None
    return original if original.response_code == ResponseCode.approved else None


def _key(row: OnlineAuthorization, prefix: str = "online") -> str:
    return f"{prefix}:{row.terminal_no}:{row.terminal_serial}"


# --- purchase and pre-authorization ---------------------------------------------------------


@_recorded
async def authorize(
    session: AsyncSession,
    terminal: TerminalContext,
    request: PurchaseRequest,
    *,
    kind: MessageKind,
    settings: Settings,
) -> Outcome:
    """A purchase (posted at once) or a pre-authorization (a hold until completed or expired)."""
    if kind not in (MessageKind.purchase, MessageKind.preauth):
        raise ValueError(f"authorize handles purchases and pre-authorizations, not {kind}")
    now = clock.now()
    outcome = await _begin(
        session,
        terminal,
        kind,
        request,
        now,
        settings,
        amount=request.amount,
        asn=request.asn.upper(),
    )
    if outcome.done:
        return outcome
    row = outcome.row
    if terminal.kind is TerminalKind.validator:
        # Validators debit purses offline; one that asks to charge an account is misused.
        return _decline(
            row, Declined(ResponseCode.not_permitted_to_terminal, "validator_online"), now
        )
    standing = await repo.card_standing(session, request.asn, now)
    refusal = card_refusal(standing, row.local_date)
    if refusal is not None or standing is None:
        return _decline(row, refusal or Declined(ResponseCode.unknown_card, "unknown_card"), now)
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
        session, terminal, MessageKind.completion, request, now, settings,
        amount=request.amount, original_serial=request.original_serial,
    )  # fmt: skip
    if outcome.done:
        return outcome
    row = outcome.row
    original = await _approved_original(
        session, terminal, request.original_serial, (MessageKind.preauth,)
    )
    if original is None:
        return _decline(row, Declined(ResponseCode.original_not_found, "no_approved_preauth"), now)
    _link(row, original)
    if original.status is not AuthStatus.held or original.hold_id is None:
        return _decline(
            row, Declined(ResponseCode.invalid_transaction, f"preauth_{original.status}"), now
        )
    if request.amount > original.approved_amount:
        return _decline(row, Declined(ResponseCode.invalid_transaction, "above_preauth"), now)
    clearing_date = await clearing_date_of(session, settings, now=now)
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
    await repo.save(session, original)
    row.ledger_transaction_id = posted.id
    return _approve(row, AuthStatus.approved, request.amount, now)


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
    """Undo the message the terminal got no answer for.

    A reversal is always answered 00 when nothing remains moved: the original never arrived
    (then it is refused if it arrives later), was declined, or is already undone.
    """
    now = clock.now()
    outcome = await _begin(
        session,
        terminal,
        MessageKind.reversal,
        request,
        now,
        settings,
        original_serial=request.original_serial,
    )
    if outcome.done:
        return outcome
    row = outcome.row
    original = await repo.by_serial(
        session, terminal.terminal_no, request.original_serial, for_update=True
    )
    if original is None:
        # The original never arrived. Claim its serial with a void row, so that if it arrives
        # later it is refused (the unique key decides, even when both race).
        void = await repo.insert_if_new(
            session,
            {
                "terminal_id": terminal.terminal_id,
                "terminal_no": terminal.terminal_no,
                "terminal_serial": request.original_serial,
                "merchant_no": terminal.merchant_no,
                "merchant_category": terminal.merchant_category,
                "kind": MessageKind.void,
                "request_hash": "",
                "amount": 0,
                "approved_amount": 0,
                "refunded_amount": 0,
                "response_code": ResponseCode.invalid_transaction.value,
                "decline_reason": "reversed_before_arrival",
                "status": AuthStatus.declined,
                "local_date": row.local_date,
                "created_at": now,
                "updated_at": now,
            },
        )
        if void is not None:
            row.decline_reason = "no_original"
            row.original_id = void.id
            return _approve(row, AuthStatus.approved, 0, now)
        original = await repo.by_serial(
            session, terminal.terminal_no, request.original_serial, for_update=True
        )
        if original is None:  # pragma: no cover - the racing insert rolled back
            raise IdempotencyConflict("original serial is being used concurrently; retry")
    if original.kind is MessageKind.void:
        return _approve(row, AuthStatus.approved, 0, now)  # reversed again: nothing to undo
    _link(row, original)
    row.amount = original.approved_amount
    if original.response_code != ResponseCode.approved or original.status in (
        AuthStatus.reversed, AuthStatus.voided, AuthStatus.expired,
    ):  # fmt: skip
        return _approve(row, AuthStatus.approved, 0, now)
    if original.kind is MessageKind.reversal:
        return _decline(
            row, Declined(ResponseCode.invalid_transaction, "reversal_of_reversal"), now
        )
    if original.kind is MessageKind.preauth and original.status is AuthStatus.completed:
        return _decline(row, Declined(ResponseCode.invalid_transaction, "preauth_completed"), now)
    if original.refunded_amount > 0:
        return _decline(row, Declined(ResponseCode.invalid_transaction, "original_refunded"), now)
    clearing_date = await clearing_date_of(session, settings, now=now)
    row.clearing_date = clearing_date
    if (
        original.kind in (MessageKind.purchase, MessageKind.preauth, MessageKind.completion)
        and original.card_no
    ):
        # The day's online spending no longer includes what is undone. The usage row is locked
        # before the ledger accounts, the order every path here keeps (no deadlock).
        await repo.release_usage(
            session, original.card_no, original.local_date, original.approved_amount
        )
    if original.kind is MessageKind.preauth:
        if original.hold_id is not None:
            await ledger.void_hold(
                session,
                original.hold_id,
                reason=f"reversal {terminal.terminal_no}:{request.terminal_serial}",
            )
        original.status = AuthStatus.voided
    else:
        if original.ledger_transaction_id is None:  # pragma: no cover - approved moves always post
            return _decline(row, Declined(ResponseCode.system_error, "original_not_posted"), now)
        posted = await ledger.reverse(
            session,
            original.ledger_transaction_id,
            idempotency_key=_key(row, "online-reversal"),
            clearing_date=clearing_date,
            reason=f"reversal of {original.kind} {terminal.terminal_no}:{original.terminal_serial}",
        )
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
        session, terminal, MessageKind.refund, request, now, settings,
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
