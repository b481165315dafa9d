"""Online account rules (DESIGN §15, docs/accounts.md): the account of each resident, the
cardholder's PIN, cash in and out at counters, balance and statement.

Every resident has one account, opened on first use; its money is the ledger account
``resident_account:<resident id>``. Money moves only through ledger postings with keys named by
their source (docs/architecture.md §6), so a retried deposit or withdrawal never books twice.

**The PIN.** Set and reset at a counter from a PIN block of the counter's PIN pad; verified for
every debit of the account (online payments, counter withdrawals) by the HSM against the stored
IBM 3624 offset, with the account reference as validation data (so the PIN survives a card
replacement; the PIN block itself is bound to the card's number). The clear PIN exists only
inside the HSM. ``pin_max_failures`` wrong PINs in a row lock the account's PIN until a counter
resets it; the row is locked while a PIN is checked, so concurrent guesses cannot outrun the
count. Services never commit: a caller that refuses after a wrong PIN commits the count first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.accounts import repository as repo
from cardsvc.accounts.models import (
    AccountMovement,
    MovementKind,
    MovementStatus,
    OnlineAccount,
)
from cardsvc.accounts.reference import make_reference, normalize
from cardsvc.audit import service as audit
from cardsvc.cards import service as cards
from cardsvc.cards.models import CardStatus
from cardsvc.cards.numbers import check_card_no, mask_card_no
from cardsvc.clearing.service import clearing_date as clearing_date_of
from cardsvc.db import unit_of_work
from cardsvc.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    Forbidden,
    IdempotencyConflict,
    InvalidStateTransition,
    NotFound,
    ValidationFailed,
)
from cardsvc.hsm import (
    HsmClient,
    HsmPinBlockInvalid,
    HsmPinPolicy,
    HsmUnavailable,
    PinKeyRef,
    PinOffset,
)
from cardsvc.ledger import service as ledger
from cardsvc.ledger.errors import HoldExpired
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest, Statement
from cardsvc.pgdirect import Guard
from cardsvc.settings import Settings

# --- errors ---------------------------------------------------------------------------------


class WrongPin(ValidationFailed):
    """The cardholder's PIN did not verify (the count of wrong PINs went up)."""


class PinLocked(DomainError):
    """Too many wrong PINs: payments from the account are refused until a counter resets it."""

    status_code = 423


class PinNotSet(Conflict):
    """The account has no PIN yet: it is set at a counter."""


class PinChecksBusy(Conflict):
    """Every try left is taken by PIN checks of the account still in the HSM: send again."""


class PinBlockUnreadable(ValidationFailed):
    """The PIN block is not format 0 for this card under this PIN pad's key (not a wrong PIN)."""


class PinRefused(ValidationFailed):
    """The new PIN breaks the PIN rules (its length, or too easy to guess)."""


# --- values ---------------------------------------------------------------------------------

PinTry = repo.PinTry  # a try taken on an account's PIN, settled after the HSM's verdict


@dataclass(frozen=True, slots=True)
class PinEntry:
    """A PIN as typed on a PIN pad: the format 0 block, the key it is under, and the number of the
    card it was typed for (the block is bound to it)."""

    key: PinKeyRef
    pin_block: bytes
    card_no: str


class PinOutcome(StrEnum):
    verified = "verified"
    wrong = "wrong"  # counted; tries remain
    locked = "locked"  # the limit is reached (now or before): refused until a counter resets
    not_set = "not_set"
    unreadable = "unreadable"  # not a format 0 block for this card: not counted
    busy = "busy"  # every try left is taken by checks still in the HSM: send again


@dataclass(frozen=True, slots=True)
class PinCheck:
    outcome: PinOutcome
    tries_left: int


@dataclass(frozen=True, slots=True)
class AccountView:
    reference: str
    resident_id: int
    balance: int  # fen
    held: int  # reserved by pending holds (pre-authorizations, withdrawals awaiting approval)
    available: int  # balance - held: what may still be spent
    pin_set: bool
    pin_locked: bool
    pin_tries_left: int


@dataclass(frozen=True, slots=True)
class MovementView:
    movement: AccountMovement
    reference: str
    replayed: bool = False


def ledger_account(resident_id: int) -> AccountRef:
    return AccountRef(AccountKind.resident_account, str(resident_id))


def counter_cash(counter_code: str) -> AccountRef:
    return AccountRef(AccountKind.counter_cash, counter_code)


# --- accounts -------------------------------------------------------------------------------


async def open_account(
    session: AsyncSession, settings: Settings, resident_id: int
) -> OnlineAccount:
    """The resident's account, opened (with its reference) if it does not exist yet."""
    account = await repo.by_resident(session, resident_id)
    if account is None:
        await repo.insert_if_absent(session, resident_id, clock.now())
        account = await repo.by_resident(session, resident_id)
        if account is None:  # pragma: no cover - the row was just inserted or found
            raise NotFound(f"no resident {resident_id}")
    if account.reference is None:
        account.reference = make_reference(settings.city_code, account.id)
        await session.flush()
    return account


def parse_reference(text: str) -> str:
    reference = normalize(text)
    if reference is None:
        raise ValidationFailed("an account reference is 14 digits with valid check digits")
    return reference


async def by_reference(
    session: AsyncSession, text: str, *, for_update: bool = False
) -> OnlineAccount:
    account = await repo.by_reference(session, parse_reference(text), for_update=for_update)
    if account is None:
        raise NotFound("no account with this reference")
    return account


async def find_by_reference(session: AsyncSession, text: str) -> OnlineAccount | None:
    """The account a payer's text names, or None (malformed, bad check digits or unknown)."""
    reference = normalize(text)
    return None if reference is None else await repo.by_reference(session, reference)


async def by_id(session: AsyncSession, account_id: int) -> OnlineAccount | None:
    return await repo.by_id(session, account_id)


async def for_resident(session: AsyncSession, resident_id: int) -> OnlineAccount | None:
    return await repo.by_resident(session, resident_id)


async def for_card(session: AsyncSession, settings: Settings, card_no: str) -> OnlineAccount:
    """The account of the holder of ``card_no`` (opened if needed)."""
    card = await cards.require_card(session, check_card_no(card_no), for_update=False)
    return await open_account(session, settings, card.resident_id)


def _reference(account: OnlineAccount) -> str:
    assert account.reference is not None  # noqa: S101 - open_account sets it before any use
    return account.reference


async def view(session: AsyncSession, settings: Settings, account: OnlineAccount) -> AccountView:
    balance, held = await ledger.balance_and_held(session, ledger_account(account.resident_id))
    return AccountView(
        reference=_reference(account),
        resident_id=account.resident_id,
        balance=balance,
        held=held,
        available=balance - held,
        pin_set=account.pin_offset is not None,
        pin_locked=account.pin_failures >= settings.pin_max_failures,
        pin_tries_left=max(0, settings.pin_max_failures - account.pin_failures),
    )


def local_day_bounds(
    settings: Settings, from_date: date | None, to_date: date | None
) -> tuple[datetime | None, datetime | None]:
    """[start, end) in UTC of the local days ``from_date`` to ``to_date`` (both included)."""
    if from_date and to_date and from_date > to_date:
        raise ValidationFailed("from_date is after to_date")
    tz = settings.zone
    start = datetime.combine(from_date, time(), tz) if from_date else None
    end = datetime.combine(to_date + timedelta(days=1), time(), tz) if to_date else None
    return start, end


async def statement(
    session: AsyncSession,
    settings: Settings,
    account: OnlineAccount,
    *,
    from_date: date | None = None,
    to_date: date | None = None,
    after: int = 0,
    limit: int = 50,
) -> Statement:
    start, end = local_day_bounds(settings, from_date, to_date)
    return await ledger.statement(
        session,
        ledger_account(account.resident_id),
        start=start,
        end=end,
        after_line_id=after,
        limit=limit,
    )


# --- the PIN --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PinTarget:
    """What a new PIN or a PIN check needs of the account, read before the HSM is asked (nothing
    is held while it works: docs/architecture.md §11)."""

    account_id: int
    resident_id: int
    reference: str
    card_no: str  # the holder's active card, the one the PIN block was typed for


async def pin_target(session: AsyncSession, account: OnlineAccount, card_no: str) -> PinTarget:
    """The account and the holder's active card ``card_no``."""
    card = await cards.require_card(session, check_card_no(card_no), for_update=False)
    if card.resident_id != account.resident_id:
        raise ValidationFailed("the card is not this account holder's")
    if card.status is not CardStatus.active:
        raise InvalidStateTransition(f"the card is {card.status.value}, not active")
    return PinTarget(account.id, account.resident_id, _reference(account), card.card_no)


async def make_pin(
    hsm: HsmClient, settings: Settings, target: PinTarget, entry: PinEntry
) -> PinOffset:
    """The HSM's verification data of the PIN in ``entry``. The HSM applies the PIN rules
    (``pin_length`` digits, not one repeated digit, not consecutive digits)."""
    try:
        return await hsm.pin_offset_generate(
            entry.key,
            entry.pin_block,
            pan=target.card_no,
            validation_data=target.reference,
            min_length=settings.pin_length,
            max_length=settings.pin_length,
        )
    except HsmPinBlockInvalid as exc:
        raise PinBlockUnreadable(
            "the PIN block is not format 0 for this card under the PIN pad's key"
        ) from exc
    except HsmPinPolicy as exc:
        raise PinRefused(exc.message) from exc
    except HsmUnavailable as exc:
        raise DependencyUnavailable("HSM unavailable") from exc


async def store_pin(
    session: AsyncSession,
    settings: Settings,
    target: PinTarget,
    made: PinOffset,
    *,
    actor: str,
    changed_by_holder: bool = False,
) -> AccountView:
    """Set the account's PIN, or reset it (which also lifts a lock and gives every try back);
    ``changed_by_holder``: the holder changed it, proving the old one (``account.pin_change``)."""
    account = await repo.by_id(session, target.account_id, for_update=True)
    assert account is not None  # noqa: S101 - accounts are never deleted
    limit = settings.pin_max_failures
    before = {
        "pin_set": account.pin_offset is not None,
        "pin_locked": account.pin_failures >= limit,
    }
    account.pin_offset, account.pin_pvk_version = made.offset, made.pvk_version
    account.pin_set_at = clock.now()
    account.pin_failures = 0
    account.pin_locked_at = None
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action=(
            "account.pin_change"
            if changed_by_holder
            else "account.pin_reset"
            if before["pin_set"]
            else "account.pin_set"
        ),
        entity="online_account",
        entity_id=target.reference,
        before=before,
        after={"pin_set": True, "pin_locked": False, "card": mask_card_no(target.card_no)},
    )
    return await view(session, settings, account)


async def take_pin_try(
    session: AsyncSession, settings: Settings, resident_id: int
) -> PinTry | PinCheck:
    """Take a try on the resident's PIN (the count goes up first, so concurrent guesses can never
    take more tries than are left), or say why none can be taken: no PIN (``not_set``), no try
    left (``locked``: the wrong PIN that used the last one stamped the lock), or every try left
    taken by checks still running (``busy``). Commit it before the HSM checks the block."""
    reserved = await repo.take_pin_try(session, resident_id, settings.pin_max_failures)
    if reserved is not None:
        return reserved
    return await _why_no_try(session, resident_id)


async def take_pin_try_after(
    session: AsyncSession, settings: Settings, resident_id: int, guard: Guard
) -> PinTry | PinCheck | None:
    """:func:`take_pin_try` in the statement of ``guard``, another domain's guarded write (a
    terminal's mark of its sequence number): None when the guard wrote nothing, and then no try
    is taken either."""
    passed, reserved = await repo.take_pin_try_after(
        session, guard, resident_id, settings.pin_max_failures
    )
    if not passed:
        return None
    if reserved is not None:
        return reserved
    return await _why_no_try(session, resident_id)


async def _why_no_try(session: AsyncSession, resident_id: int) -> PinCheck:
    state = await repo.by_resident(session, resident_id)
    if state is None or state.pin_offset is None:
        return PinCheck(PinOutcome.not_set, 0)
    if state.pin_locked_at is None:
        return PinCheck(PinOutcome.busy, 0)
    return PinCheck(PinOutcome.locked, 0)


async def verify_pin_try(hsm: HsmClient, reserved: PinTry, entry: PinEntry) -> bool | None:
    """The HSM's verdict on the PIN in ``entry`` against the try's verification data, in one
    call: True or False, None when the block cannot be read (not a try). ``HsmUnavailable``
    propagates: the caller gives the try back."""
    try:
        return await hsm.pin_verify(
            entry.key,
            entry.pin_block,
            pan=entry.card_no,
            validation_data=reserved.reference,
            stored=PinOffset(reserved.offset, reserved.pvk_version),
        )
    except HsmPinBlockInvalid:
        return None


async def settle_pin_try(
    session: AsyncSession, settings: Settings, reserved: PinTry, valid: bool | None
) -> PinCheck:
    """Settle a try by the HSM's verdict: a right PIN puts the count back to zero, an unreadable
    block (``None``) gives the try back, a wrong PIN keeps it, and the one that uses the last try
    locks the PIN."""
    limit = settings.pin_max_failures
    if valid is None:
        await repo.give_pin_try_back(session, reserved.account_id)
        return PinCheck(PinOutcome.unreadable, limit - reserved.failures + 1)
    if valid:
        await repo.clear_pin_failures(session, reserved.account_id)
        return PinCheck(PinOutcome.verified, limit)
    left = limit - reserved.failures
    if left <= 0:
        await repo.stamp_pin_lock(session, reserved.account_id, clock.now())
    return PinCheck(PinOutcome.wrong if left > 0 else PinOutcome.locked, max(0, left))


async def check_pin(
    sessions: async_sessionmaker[AsyncSession],
    hsm: HsmClient,
    settings: Settings,
    resident_id: int,
    entry: PinEntry,
) -> PinCheck:
    """Check the cardholder's PIN for a debit of the resident's account, counting wrong ones.

    Three steps, none holding the database while the HSM works: a short transaction of its own
    takes a try (:func:`take_pin_try`), the HSM checks the block (:func:`verify_pin_try`), and a
    second short transaction settles the try (:func:`settle_pin_try`; an HSM that did not answer
    gives it back). Both commit on their own, whatever the caller then decides.
    ``HsmUnavailable`` propagates."""
    async with unit_of_work(sessions) as session:
        taken = await take_pin_try(session, settings, resident_id)
    if isinstance(taken, PinCheck):
        return taken
    valid: bool | None = None
    try:
        valid = await verify_pin_try(hsm, taken, entry)
    finally:
        async with unit_of_work(sessions) as session:
            check = await settle_pin_try(session, settings, taken, valid)
    return check


def require_verified(check: PinCheck) -> None:
    """Raise the staff API's error for a PIN check that did not verify."""
    if check.outcome is PinOutcome.verified:
        return
    if check.outcome is PinOutcome.wrong:
        raise WrongPin(f"wrong PIN; {check.tries_left} tries left before the PIN is locked")
    if check.outcome is PinOutcome.locked:
        raise PinLocked("too many wrong PINs: the PIN is locked until it is reset at a counter")
    if check.outcome is PinOutcome.not_set:
        raise PinNotSet("the account has no PIN yet; set it first")
    if check.outcome is PinOutcome.busy:
        raise PinChecksBusy("other PIN checks of this account are running; send again")
    raise PinBlockUnreadable("the PIN block is not format 0 for this card under the PIN pad's key")


# --- cash at counters -----------------------------------------------------------------------


def _movement_hash(kind: MovementKind, account: OnlineAccount, amount: int) -> str:
    body = json.dumps([kind.value, account.id, amount], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


async def _replay(
    session: AsyncSession,
    kind: MovementKind,
    account: OnlineAccount,
    counter_code: str,
    receipt_no: str,
    amount: int,
) -> MovementView | None:
    """The movement this receipt already made (a retry), or None; other content is a conflict."""
    existing = await repo.movement_by_receipt(session, kind, counter_code, receipt_no)
    if existing is None:
        return None
    if existing.request_hash != _movement_hash(kind, account, amount):
        raise IdempotencyConflict(
            f"receipt {receipt_no} of counter {counter_code} was used for another {kind.value}"
        )
    return MovementView(existing, _reference(account), replayed=True)


async def _claim(
    session: AsyncSession,
    settings: Settings,
    kind: MovementKind,
    account: OnlineAccount,
    *,
    counter_code: str,
    receipt_no: str,
    amount: int,
    status: MovementStatus,
    actor: str,
    card_no: str | None = None,
) -> tuple[AccountMovement | None, date]:
    clearing_date = await clearing_date_of(session, settings)
    row = await repo.claim_movement(
        session,
        {
            "kind": kind,
            "account_id": account.id,
            "counter_code": counter_code,
            "receipt_no": receipt_no,
            "amount": amount,
            "request_hash": _movement_hash(kind, account, amount),
            "status": status,
            "card_no": card_no,
            "operator": actor,
            "clearing_date": clearing_date,
            "created_at": clock.now(),
        },
    )
    return row, clearing_date


def _movement_audit(row: AccountMovement) -> dict[str, object]:
    return {
        "amount": row.amount,
        "counter": row.counter_code,
        "receipt": row.receipt_no,
        "status": row.status,
    }


async def deposit(
    session: AsyncSession,
    settings: Settings,
    account: OnlineAccount,
    *,
    counter_code: str,
    receipt_no: str,
    amount: int,
    actor: str,
) -> MovementView:
    """Cash paid in at a counter: counter cash → the account, once per receipt number."""
    replay = await _replay(session, MovementKind.deposit, account, counter_code, receipt_no, amount)
    if replay is not None:
        return replay
    row, clearing_date = await _claim(
        session, settings, MovementKind.deposit, account, counter_code=counter_code,
        receipt_no=receipt_no, amount=amount, status=MovementStatus.posted, actor=actor,
    )  # fmt: skip
    if row is None:  # a concurrent request with this receipt committed first
        found = await _replay(
            session, MovementKind.deposit, account, counter_code, receipt_no, amount
        )
        assert found is not None  # noqa: S101 - the conflicting row exists
        return found
    posted = await ledger.post(
        session,
        PostingRequest(
            idempotency_key=f"deposit:{counter_code}:{receipt_no}",
            tx_type="account_deposit",
            clearing_date=clearing_date,
            entries=[
                Entry(counter_cash(counter_code), Side.debit, amount),
                Entry(ledger_account(account.resident_id), Side.credit, amount),
            ],
            record_ref=f"account_movement:{row.id}",
            description=f"cash deposit at counter {counter_code}, receipt {receipt_no}",
        ),
    )
    row.ledger_transaction_id = posted.id
    row.decided_at = row.created_at
    await session.flush()
    await audit.record(
        session, actor=actor, action="account.deposit", entity="online_account",
        entity_id=_reference(account), after=_movement_audit(row),
    )  # fmt: skip
    return MovementView(row, _reference(account))


def _withdrawal_key(row: AccountMovement, prefix: str = "withdrawal") -> str:
    return f"{prefix}:{row.counter_code}:{row.receipt_no}"


async def find_movement(
    session: AsyncSession,
    kind: MovementKind,
    account: OnlineAccount,
    *,
    counter_code: str,
    receipt_no: str,
    amount: int,
) -> MovementView | None:
    """The movement a receipt already made (a retry: answered with it), or None."""
    return await _replay(session, kind, account, counter_code, receipt_no, amount)


async def withdraw(
    session: AsyncSession,
    settings: Settings,
    account: OnlineAccount,
    check: PinCheck,
    *,
    card_no: str,
    counter_code: str,
    receipt_no: str,
    amount: int,
    actor: str,
) -> MovementView:
    """Cash paid out at a counter after the cardholder's PIN (``check``, made before with
    :func:`check_pin`): posted at once up to ``withdrawal_approval_above``; above it the amount is
    held until a supervisor approves. A retry with the same receipt answers the first movement."""
    replay = await _replay(
        session, MovementKind.withdrawal, account, counter_code, receipt_no, amount
    )
    if replay is not None:
        return replay
    require_verified(check)
    needs_approval = amount > settings.withdrawal_approval_above
    status = MovementStatus.awaiting_approval if needs_approval else MovementStatus.posted
    row, clearing_date = await _claim(
        session, settings, MovementKind.withdrawal, account, counter_code=counter_code,
        receipt_no=receipt_no, amount=amount, status=status, actor=actor, card_no=card_no,
    )  # fmt: skip
    if row is None:
        found = await _replay(
            session, MovementKind.withdrawal, account, counter_code, receipt_no, amount
        )
        assert found is not None  # noqa: S101 - the conflicting row exists
        return found
    resident, drawer = ledger_account(account.resident_id), counter_cash(counter_code)
    if needs_approval:
        hold = await ledger.place_hold(
            session,
            idempotency_key=_withdrawal_key(row, "withdrawal-hold"),
            account=resident,
            amount=amount,
            expires_at=clock.now() + timedelta(seconds=settings.withdrawal_approval_seconds),
            counterparty=drawer,
            clearing_date=clearing_date,
        )
        row.hold_id = hold.id
    else:
        posted = await ledger.post(
            session,
            PostingRequest(
                idempotency_key=_withdrawal_key(row),
                tx_type="account_withdrawal",
                clearing_date=clearing_date,
                entries=[Entry(resident, Side.debit, amount), Entry(drawer, Side.credit, amount)],
                record_ref=f"account_movement:{row.id}",
                description=f"cash withdrawal at counter {counter_code}, receipt {receipt_no}",
            ),
        )
        row.ledger_transaction_id = posted.id
        row.decided_at = row.created_at
    await session.flush()
    await audit.record(
        session, actor=actor, action="account.withdrawal", entity="online_account",
        entity_id=_reference(account), after=_movement_audit(row),
    )  # fmt: skip
    return MovementView(row, _reference(account))


async def _pending_withdrawal(session: AsyncSession, movement_id: int) -> AccountMovement:
    row = await repo.movement(session, movement_id, for_update=True)
    if row is None or row.kind is not MovementKind.withdrawal:
        raise NotFound(f"no withdrawal {movement_id}")
    if row.status is not MovementStatus.awaiting_approval:
        raise InvalidStateTransition(f"withdrawal {movement_id} is {row.status.value}")
    return row


async def _account_of(session: AsyncSession, row: AccountMovement) -> OnlineAccount:
    account = await repo.by_id(session, row.account_id)
    assert account is not None  # noqa: S101 - accounts are never deleted
    return account


async def approve_withdrawal(
    session: AsyncSession, settings: Settings, movement_id: int, *, actor: str
) -> MovementView:
    """A supervisor pays out a held withdrawal (a second person: not its operator). A hold that
    ran out first is not paid: the answer says ``expired``."""
    row = await _pending_withdrawal(session, movement_id)
    if actor == row.operator:
        raise Forbidden("a withdrawal is approved by a second person, not its operator")
    assert row.hold_id is not None  # noqa: S101 - awaiting withdrawals always hold
    account = await _account_of(session, row)
    now = clock.now()
    try:
        posted = await ledger.post_hold(
            session,
            row.hold_id,
            row.amount,
            idempotency_key=_withdrawal_key(row),
            clearing_date=await clearing_date_of(session, settings),
            tx_type="account_withdrawal",
            record_ref=f"account_movement:{row.id}",
        )
    except HoldExpired:
        row.status = MovementStatus.expired
    else:
        row.status = MovementStatus.posted
        row.ledger_transaction_id = posted.id
    row.approver, row.decided_at = actor, now
    await session.flush()
    await audit.record(
        session, actor=actor, action="account.withdrawal_approve", entity="online_account",
        entity_id=_reference(account), after=_movement_audit(row),
    )  # fmt: skip
    return MovementView(row, _reference(account))


async def reject_withdrawal(session: AsyncSession, movement_id: int, *, actor: str) -> MovementView:
    row = await _pending_withdrawal(session, movement_id)
    assert row.hold_id is not None  # noqa: S101 - awaiting withdrawals always hold
    account = await _account_of(session, row)
    await ledger.void_hold(session, row.hold_id, reason=f"withdrawal {row.id} rejected by {actor}")
    row.status, row.approver, row.decided_at = MovementStatus.rejected, actor, clock.now()
    await session.flush()
    await audit.record(
        session, actor=actor, action="account.withdrawal_reject", entity="online_account",
        entity_id=_reference(account), after=_movement_audit(row),
    )  # fmt: skip
    return MovementView(row, _reference(account))


async def movement_view(session: AsyncSession, movement_id: int) -> MovementView:
    row = await repo.movement(session, movement_id)
    if row is None:
        raise NotFound(f"no counter movement {movement_id}")
    return MovementView(row, _reference(await _account_of(session, row)))
