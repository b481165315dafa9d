"""Resident self-service rules (docs/self-service.md): activation codes issued at counters, the
resident's activation, login, password and logout, and the resident's own account, statement,
cards and loss report.

Nothing slow holds the database (docs/architecture.md §11): the credential is read in a short
session of its own, the password is hashed or verified in a worker thread with no connection
held, and the outcome is written in the request's session by one guarded statement. Refusals
that count (a wrong password, a wrong code) raise after the count is written: the caller commits
anyway. Every refused login or activation answers one 401, whatever the reason.
"""

from __future__ import annotations

import hmac
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.accounts import service as accounts
from cardsvc.audit import service as audit
from cardsvc.blacklist import service as blacklist
from cardsvc.cache import Cache
from cardsvc.cards import service as cards
from cardsvc.cards.models import Card, CardStatus, CardType
from cardsvc.cards.numbers import check_card_no, mask_card_no
from cardsvc.errors import (
    Conflict,
    DomainError,
    InvalidStateTransition,
    NotAuthenticated,
    NotFound,
    ValidationFailed,
)
from cardsvc.ledger.schemas import Statement
from cardsvc.selfservice import limits
from cardsvc.selfservice import repository as repo
from cardsvc.selfservice.auth import (
    ResidentPrincipal,
    check_password,
    code_hash,
    issue_token,
    new_code,
    normalize_code,
    show_code,
)
from cardsvc.selfservice.models import ResidentCredential
from cardsvc.settings import Settings
from cardsvc.staff.auth import hash_password, verify_password

# The cards a resident may log in with: the active one, and one lost or frozen (to see its
# status, or to report it lost). A replaced, cancelled or expired card's number opens nothing.
LOGIN_STATUSES = (CardStatus.active, CardStatus.lost, CardStatus.frozen)

# --- errors -----------------------------------------------------------------------------------

# One answer for every refused login, and one for every refused activation: an unknown card, a
# card with no online access, a wrong password and a lockout look the same from outside.
LOGIN_REFUSED = "wrong card number or password, or online access locked after repeated failures"
ACTIVATION_REFUSED = "wrong card number or activation code, or the code expired or was replaced"


class LoginFailed(NotAuthenticated):
    """The card number and password do not open online access (whatever the reason)."""


class ActivationFailed(NotAuthenticated):
    """The card number and activation code do not match a live code (whatever the reason)."""


class ActivationCodeMalformed(ValidationFailed):
    """Not 12 characters of the code's alphabet (after spaces and hyphens are dropped)."""


class WrongPassword(ValidationFailed):
    """The old password of a password change is wrong (it counts like a failed login)."""


class OnlineAccessLocked(DomainError):
    """Too many wrong passwords: wait for the lockout to end, or ask a counter to unlock."""

    status_code = 423


class NotActivated(NotFound):
    """The card's holder has no online access yet (no code was ever issued)."""


class NoCardToReport(Conflict):
    """The resident has no active card to report lost."""


# --- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginResult:
    token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code: str  # shown once, as XXXX-XXXX-XXXX
    expires_at: datetime
    card_no: str
    reactivation: bool  # online access was activated before: the code sets a new password


@dataclass(frozen=True, slots=True)
class AccessView:
    """A resident's online access as a counter sees it (no secret, no code)."""

    activated: bool
    activated_at: datetime | None
    last_login_at: datetime | None
    locked_until: datetime | None
    code_pending: bool
    code_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class ResidentCard:
    card_no: str  # masked
    card_type: CardType
    status: CardStatus
    status_changed_at: datetime
    expires_on: date | None
    purse_balance: int  # fen the chip holds as far as the host has seen
    balance_to_load: int  # fen moved from a replaced card, to load onto this one at a counter
    blacklisted: bool


@dataclass(frozen=True, slots=True)
class LossReport:
    card: ResidentCard
    blacklist_version: int
    already_reported: bool


def _live_code(credential: ResidentCredential, now: datetime) -> bool:
    return (
        credential.code_hash is not None
        and credential.code_expires_at is not None
        and credential.code_expires_at > now
    )


def _locked(credential: ResidentCredential, now: datetime) -> bool:
    return credential.locked_until is not None and credential.locked_until > now


def _access_view(credential: ResidentCredential | None) -> AccessView:
    now = clock.now()
    if credential is None:
        return AccessView(False, None, None, None, False, None)
    live = _live_code(credential, now)
    return AccessView(
        activated=credential.password_hash is not None,
        activated_at=credential.activated_at,
        last_login_at=credential.last_login_at,
        locked_until=credential.locked_until if _locked(credential, now) else None,
        code_pending=live,
        code_expires_at=credential.code_expires_at if live else None,
    )


# --- at the counter -----------------------------------------------------------------------------


async def issue_code(
    session: AsyncSession, settings: Settings, card_no: str, *, actor: str
) -> IssuedCode:
    """A new activation code for the holder of the active card ``card_no``: it replaces any code
    issued before. The operator checked the holder's identity document; the code is shown once
    and stored only as its HMAC."""
    card = await cards.require_card(session, check_card_no(card_no), for_update=False)
    if card.status is not CardStatus.active:
        raise InvalidStateTransition(f"the card is {card.status.value}, not active")
    now = clock.now()
    await repo.insert_if_absent(session, card.resident_id, now)
    credential = await repo.by_resident(session, card.resident_id, for_update=True)
    if credential is None:  # pragma: no cover - the row was just inserted or found
        raise NotFound("no such resident")
    superseded = _live_code(credential, now)
    code = new_code()
    credential.code_hash = code_hash(settings, credential.id, code)
    credential.code_card_id = card.id
    credential.code_expires_at = now + timedelta(
        seconds=settings.resident_activation_code_ttl_seconds
    )
    credential.code_failures = 0
    credential.code_issued_at = now
    credential.code_issued_by = actor
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action="selfservice.code_issue",
        entity="resident",
        entity_id=str(card.resident_id),
        after={
            "card": mask_card_no(card.card_no),
            "expires_at": credential.code_expires_at,
            "superseded": superseded,
            "reactivation": credential.password_hash is not None,
        },
    )
    return IssuedCode(
        code=show_code(code),
        expires_at=credential.code_expires_at,
        card_no=card.card_no,
        reactivation=credential.password_hash is not None,
    )


async def access_of_card(session: AsyncSession, card_no: str) -> AccessView:
    card = await cards.require_card(session, check_card_no(card_no), for_update=False)
    return _access_view(await repo.by_resident(session, card.resident_id))


async def unlock(session: AsyncSession, card_no: str, *, actor: str) -> AccessView:
    """Lift a lockout of the card holder's online access (the holder is at the counter)."""
    card = await cards.require_card(session, check_card_no(card_no), for_update=False)
    credential = await repo.by_resident(session, card.resident_id, for_update=True)
    if credential is None or credential.password_hash is None:
        raise NotActivated("the card's holder has not activated online access")
    was_locked = _locked(credential, clock.now())
    credential.failed_logins = 0
    credential.locked_until = None
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action="selfservice.unlock",
        entity="resident",
        entity_id=str(card.resident_id),
        before={"locked": was_locked},
    )
    return _access_view(credential)


# --- the resident: activation and login -------------------------------------------------------


def _token(settings: Settings, credential: ResidentCredential, card: Card, version: int) -> str:
    return issue_token(
        settings, ResidentPrincipal(credential.id, credential.resident_id, card.id, version)
    )


async def activate(
    reads: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    settings: Settings,
    cache: Cache,
    *,
    card_no: str,
    code_text: str,
    password: str,
    address: str | None,
) -> LoginResult:
    """Spend a live activation code and set the password (first activation, or a new password
    after a forgotten one); answers a token, as a login does."""
    card_no = check_card_no(card_no)
    code = normalize_code(code_text)
    if code is None:
        raise ActivationCodeMalformed(
            "an activation code is 12 characters of 0-9 and A-Z without I, L, O, U"
        )
    clear = check_password(password, card_no)
    subject = limits.Subject(card_no, address)
    await limits.check(cache, settings, subject)
    now = clock.now()
    async with reads() as reading:
        card = await cards.by_no(reading, card_no)
        credential = None if card is None else await repo.by_resident(reading, card.resident_id)
    live = (
        card is not None
        and credential is not None
        and _live_code(credential, now)
        and credential.code_card_id == card.id
        and card.status is CardStatus.active
        and credential.code_failures < settings.resident_max_code_failures
    )
    if not live or card is None or credential is None or credential.code_hash is None:
        await limits.count_failure(cache, settings, subject)
        raise ActivationFailed(ACTIVATION_REFUSED)
    if not hmac.compare_digest(code_hash(settings, credential.id, code), credential.code_hash):
        await limits.count_failure(cache, settings, subject)
        await repo.record_code_failure(
            session,
            credential.id,
            credential.code_hash,
            max_failures=settings.resident_max_code_failures,
        )
        raise ActivationFailed(ACTIVATION_REFUSED)
    password_hash = await hash_password(clear)
    version = await repo.activate(session, credential.id, credential.code_hash, password_hash, now)
    if version is None:  # spent or replaced while the password was hashed
        raise ActivationFailed(ACTIVATION_REFUSED)
    await audit.record(
        session,
        actor=f"resident:{card.resident_id}",
        action="selfservice.activate",
        entity="resident",
        entity_id=str(card.resident_id),
        after={"card": mask_card_no(card.card_no)},
    )
    return LoginResult(
        _token(settings, credential, card, version), settings.resident_token_ttl_seconds
    )


async def login(
    reads: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    settings: Settings,
    cache: Cache,
    *,
    card_no: str,
    password: str,
    address: str | None,
) -> LoginResult:
    """Card number and password → a resident token. Every refusal costs one argon2 verification
    (a dummy one when there is nothing to verify) and answers the same 401."""
    card_no = check_card_no(card_no)
    subject = limits.Subject(card_no, address)
    await limits.check(cache, settings, subject)
    now = clock.now()
    async with reads() as reading:
        card = await cards.by_no(reading, card_no)
        credential = None if card is None else await repo.by_resident(reading, card.resident_id)
    usable = (
        card is not None
        and card.status in LOGIN_STATUSES
        and credential is not None
        and credential.password_hash is not None
        and not _locked(credential, now)
    )
    stored = credential.password_hash if usable and credential is not None else None
    matches = await verify_password(stored, check_password_text(password))
    if not matches or card is None or credential is None:
        await limits.count_failure(cache, settings, subject)
        if usable and credential is not None:
            await repo.record_login_failure(
                session,
                credential.id,
                max_failures=settings.resident_max_failed_logins,
                locked_until=now + timedelta(seconds=settings.resident_lockout_seconds),
            )
        raise LoginFailed(LOGIN_REFUSED)
    version = await repo.record_login(session, credential.id, now)
    if version is None:  # locked while the password was checked
        raise LoginFailed(LOGIN_REFUSED)
    return LoginResult(
        _token(settings, credential, card, version), settings.resident_token_ttl_seconds
    )


def check_password_text(password: str) -> str:
    """A password as typed, in the form it was hashed in (NFC)."""
    return unicodedata.normalize("NFC", password)


async def credential_of(
    reading: AsyncSession, principal: ResidentPrincipal
) -> ResidentCredential | None:
    """The credential a token names, as it is now, when the token is still live."""
    credential = await repo.get(reading, principal.credential_id)
    if (
        credential is None
        or credential.resident_id != principal.resident_id
        or credential.password_hash is None
        or credential.session_version != principal.session_version
    ):
        return None
    return credential


# --- the resident's own routes ------------------------------------------------------------------


async def change_password(
    reads: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    settings: Settings,
    cache: Cache,
    principal: ResidentPrincipal,
    *,
    old_password: str,
    new_password: str,
    address: str | None,
) -> LoginResult:
    """The old password, then the new one: every other token ends; answers a new token."""
    now = clock.now()
    async with reads() as reading:
        credential = await credential_of(reading, principal)
        card = await cards.find(reading, principal.card_id)
    if credential is None or card is None or credential.password_hash is None:
        raise NotAuthenticated("session ended: log in again")
    clear = check_password(new_password, card.card_no)
    subject = limits.Subject(card.card_no, address)
    await limits.check(cache, settings, subject)
    if _locked(credential, now):
        raise OnlineAccessLocked(
            "too many wrong passwords: wait for the lockout to end or ask a counter to unlock"
        )
    if not await verify_password(credential.password_hash, check_password_text(old_password)):
        await limits.count_failure(cache, settings, subject)
        await repo.record_login_failure(
            session,
            credential.id,
            max_failures=settings.resident_max_failed_logins,
            locked_until=now + timedelta(seconds=settings.resident_lockout_seconds),
        )
        raise WrongPassword("the old password is wrong")
    new_hash = await hash_password(clear)
    version = await repo.change_password(
        session,
        credential.id,
        session_version=principal.session_version,
        old_hash=credential.password_hash,
        new_hash=new_hash,
        now=now,
    )
    if version is None:
        raise NotAuthenticated("session ended: log in again")
    await audit.record(
        session,
        actor=principal.actor,
        action="selfservice.password_change",
        entity="resident",
        entity_id=str(principal.resident_id),
    )
    return LoginResult(
        _token(settings, credential, card, version), settings.resident_token_ttl_seconds
    )


async def logout(session: AsyncSession, principal: ResidentPrincipal) -> None:
    """Every live token of the resident ends (on every device)."""
    await repo.end_sessions(session, principal.credential_id)


async def account(
    session: AsyncSession, settings: Settings, principal: ResidentPrincipal
) -> accounts.AccountView:
    """The resident's online account (opened on first use: its reference is what a bank
    transfer names)."""
    found = await accounts.open_account(session, settings, principal.resident_id)
    return await accounts.view(session, settings, found)


async def statement(
    session: AsyncSession,
    settings: Settings,
    principal: ResidentPrincipal,
    *,
    from_date: date | None,
    to_date: date | None,
    after: int,
    limit: int,
) -> tuple[str, Statement]:
    found = await accounts.open_account(session, settings, principal.resident_id)
    lines = await accounts.statement(
        session, settings, found, from_date=from_date, to_date=to_date, after=after, limit=limit
    )
    assert found.reference is not None  # noqa: S101 - open_account sets it
    return found.reference, lines


async def _card_view(session: AsyncSession, card: Card) -> ResidentCard:
    held = await cards.balances(session, card)
    return ResidentCard(
        card_no=mask_card_no(card.card_no),
        card_type=card.card_type,
        status=card.status,
        status_changed_at=card.status_changed_at,
        expires_on=card.expires_on,
        purse_balance=held.float_balance,
        balance_to_load=held.to_load,
        blacklisted=await blacklist.is_blacklisted(session, card.asn),
    )


async def cards_of(session: AsyncSession, principal: ResidentPrincipal) -> list[ResidentCard]:
    """The resident's cards, newest first."""
    found = await cards.of_resident(session, principal.resident_id)
    return [await _card_view(session, card) for card in reversed(found)]


async def report_loss(session: AsyncSession, principal: ResidentPrincipal) -> LossReport:
    """The resident's active card is lost (挂失): blacklisted at once by the counter's own path
    (``cards.service.report_loss``), and every live token of the resident ends. Asked again, it
    answers the card already reported (``already_reported``), and ends nothing."""
    card = await cards.active_card(session, principal.resident_id, for_update=True)
    if card is not None:
        version = await cards.report_loss(session, card, actor=principal.actor)
        await repo.end_sessions(session, principal.credential_id)
        return LossReport(await _card_view(session, card), version, already_reported=False)
    lost = [
        c
        for c in await cards.of_resident(session, principal.resident_id)
        if c.status is CardStatus.lost
    ]
    if lost:
        newest = max(lost, key=lambda c: (c.status_changed_at, c.id))
        return LossReport(
            await _card_view(session, newest),
            await blacklist.current_version(session),
            already_reported=True,
        )
    raise NoCardToReport("no active card to report lost")
