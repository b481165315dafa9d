"""Terminal messages: the one serial space of a terminal, and what every answer is made of.

Every online message (purchase, pre-authorization, completion, reversal, refund) and every purse
load of a terminal claims its (terminal number, terminal serial) here, in ``online_authorizations``
(DESIGN §9 "One serial space"): the unique key on that pair is the judge, whatever the message.
A load's row there is its claim on the serial and the first answer it got; the load itself lives
in ``purse_loads``. A serial can therefore have one answer only:

- the same message again is a replay (its first answer, ``replayed: true``);
- another message on a taken serial is an ``IdempotencyConflict`` (409);
- a serial a reversal named before its message arrived holds a ``void`` row: the first message
  that then arrives on it is refused 12 (and a repeat of that message gets the same 12).

Purchases and loads share the answer vocabulary too: response codes and their texts, declines,
the card check. This module imports neither service, so both can use it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.cards.models import CardStatus
from cardsvc.errors import Conflict, IdempotencyConflict
from cardsvc.ledger.models import AccountKind
from cardsvc.ledger.schemas import AccountRef
from cardsvc.settings import Settings
from terminals.access.context import TerminalContext
from terminals.online import repository as repo
from terminals.online.models import AuthStatus, MessageKind, OnlineAuthorization
from terminals.online.repository import CardStanding
from terminals.online.schemas import ResponseCode

# The text of every code the host sends (docs/terminal-protocol.md §9.1 lists when).
MESSAGES: dict[str, str] = {
    ResponseCode.approved: "approved",
    ResponseCode.invalid_transaction: "invalid transaction",
    ResponseCode.unknown_card: "unknown card",
    ResponseCode.original_not_found: "original not found",
    ResponseCode.lost_card: "lost card",
    ResponseCode.insufficient_funds: "insufficient funds",
    ResponseCode.incorrect_pin: "incorrect PIN",
    ResponseCode.expired_card: "expired card",
    ResponseCode.not_permitted_to_terminal: "transaction not permitted to terminal",
    ResponseCode.exceeds_limit: "exceeds limit",
    ResponseCode.restricted_card: "restricted card",
    ResponseCode.pin_tries_exceeded: "allowable number of PIN tries exceeded",
    ResponseCode.pin_unreadable: "PIN cryptographic error",
    ResponseCode.system_error: "system error",
}


class Declined(Exception):
    """A decline: the message is answered with ``code`` and nothing moves."""

    def __init__(self, code: ResponseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def local_now(settings: Settings, now: datetime | None = None) -> datetime:
    """Wall-clock time of the city (docs/architecture.md, "Time")."""
    return (now or clock.now()).astimezone(settings.zone)


# Fields that are not part of a message's identity: a PIN block is new at every entry (and
# under a new session's key after a sign-in), so a retry of the serial must not conflict with it.
NOT_HASHED: set[str] = {"pin_block"}


def request_hash(kind: str, request: BaseModel) -> str:
    content = request.model_dump(mode="json", exclude=NOT_HASHED)
    body = json.dumps({"kind": kind, **content}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def card_refusal(standing: CardStanding | None, today: date) -> Declined | None:
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


async def card_standing(session: AsyncSession, asn: str) -> CardStanding | None:
    """The card with this ASN as an online payment or load needs it, in one round trip."""
    return await repo.card_standing(session, asn, clock.now())


async def card_standing_at_serial(
    session: AsyncSession, asn: str, terminal_no: str, serial: int
) -> tuple[CardStanding | None, bool]:
    """The card's standing, and whether the terminal's serial already holds a message."""
    return await repo.card_standing_at_serial(session, asn, clock.now(), terminal_no, serial)


def resident_account(resident_id: int) -> AccountRef:
    return AccountRef(AccountKind.resident_account, str(resident_id))


def merchant_pending(merchant_no: str) -> AccountRef:
    return AccountRef(AccountKind.merchant_pending, merchant_no)


# --- the serial space -----------------------------------------------------------------------


class Claim(Enum):
    new = "new"  # the serial is this message's now; decide it and record the row
    replay = "replay"  # the same message was answered before: ``row`` holds that answer
    reversed = "reversed"  # a reversal named the serial first: the message is refused 12


@dataclass(frozen=True, slots=True)
class Claimed:
    claim: Claim
    row: OnlineAuthorization  # new: the fresh row; replay: the first answer; reversed: the void
    standing: CardStanding | None = None  # the card ``claim_serial`` was asked to read with it


async def claim_serial(
    session: AsyncSession,
    terminal: TerminalContext,
    kind: MessageKind,
    digest: str,
    local: datetime,
    *,
    standing_of: str | None = None,
    **fields: Any,
) -> Claimed:
    """Claim (terminal, serial) for a message of ``kind`` whose content hashes to ``digest``;
    with ``standing_of`` (an ASN) a new claim also reads that card's standing, in the same round
    trip."""
    now = clock.now()
    values: dict[str, Any] = {
        "terminal_id": terminal.terminal_id,
        "terminal_no": terminal.terminal_no,
        "merchant_no": terminal.merchant_no,
        "merchant_category": terminal.merchant_category,
        "kind": kind,
        "request_hash": digest,
        "amount": 0,
        "approved_amount": 0,
        "refunded_amount": 0,
        # Placeholder until decided, in the same database transaction.
        "response_code": ResponseCode.system_error.value,
        "status": AuthStatus.declined,
        "local_date": local.date(),
        "created_at": now,
        "updated_at": now,
        **fields,
    }
    if standing_of is None:
        new, standing = await repo.insert_if_new(session, values), None
    else:
        new, standing = await repo.insert_if_new_with_standing(session, values, standing_of, now)
    if new is not None:
        return Claimed(Claim.new, new, standing)
    serial = values["terminal_serial"]
    existing = await repo.by_serial(session, terminal.terminal_no, serial)
    if existing is None:  # pragma: no cover - the conflicting insert rolled back
        raise Conflict("terminal serial is being used concurrently; retry")
    if existing.kind is MessageKind.void and existing.request_hash == "":
        # The first message on a serial reversed before it arrived: refused 12, and bound to
        # this message so that a repeat gets the same answer and another message a conflict.
        existing = await repo.by_serial(session, terminal.terminal_no, serial, for_update=True)
        if existing is not None and existing.request_hash == "":
            existing.request_hash = digest
            existing.updated_at = now
            await repo.save(session, existing)
            return Claimed(Claim.reversed, existing)
        if existing is None:  # pragma: no cover - rows are never deleted
            raise Conflict("terminal serial is being used concurrently; retry")
    if existing.request_hash != digest:
        raise IdempotencyConflict(
            f"terminal serial {serial} was used for another message",
            authorization_id=existing.id,
        )
    return Claimed(Claim.replay, existing)


async def claim_void(
    session: AsyncSession, terminal: TerminalContext, serial: int, local: datetime
) -> OnlineAuthorization | None:
    """Claim a serial no message has used yet for a reversal that named it (the original never
    arrived); None when a message took it meanwhile."""
    now = clock.now()
    return await repo.insert_if_new(
        session,
        {
            "terminal_id": terminal.terminal_id,
            "terminal_no": terminal.terminal_no,
            "terminal_serial": serial,
            "merchant_no": terminal.merchant_no,
            "merchant_category": terminal.merchant_category,
            "kind": MessageKind.void,
            "request_hash": "",  # bound to the first message that arrives on it
            "amount": 0,
            "approved_amount": 0,
            "refunded_amount": 0,
            "response_code": ResponseCode.invalid_transaction.value,
            "decline_reason": "reversed_before_arrival",
            "status": AuthStatus.declined,
            "local_date": local.date(),
            "created_at": now,
            "updated_at": now,
        },
    )


async def by_serial(
    session: AsyncSession, terminal_no: str, serial: int, *, for_update: bool = False
) -> OnlineAuthorization | None:
    """The message on (terminal, serial), untracked; row-locked with ``for_update``."""
    return await repo.by_serial(session, terminal_no, serial, for_update=for_update)


async def record(session: AsyncSession, row: OnlineAuthorization) -> None:
    """Write a message row back as decided (message rows are untracked: ``repo.save``)."""
    await repo.save(session, row)
