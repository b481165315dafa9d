"""Self-service routes (docs/self-service.md): the counter's activation codes and unlock, the
resident's activation and login, and the resident's own routes under ``/me``.

Every ``/me`` route takes the resident from the token (``CurrentResident``), never from a path
or a body: there is no id a resident could change to reach another's data.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from cardsvc.accounts.endpoints import statement_out
from cardsvc.accounts.schemas import StatementOut
from cardsvc.api.limits import BodyLimit, GuardedRoute, body_limit
from cardsvc.api.openapi import errors
from cardsvc.deps import CacheDep, SessionDep, SessionsDep, SettingsDep, client_address
from cardsvc.selfservice import service
from cardsvc.selfservice.deps import CurrentResident
from cardsvc.selfservice.schemas import (
    AccessOut,
    ActivateIn,
    CardIn,
    CardsOut,
    CodeIssued,
    LoginIn,
    LossOut,
    PasswordChangeIn,
    ResidentAccountOut,
    ResidentCardOut,
    TokenOut,
)
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles

# A card number, a code and a password (128 characters, escaped as \uXXXX at worst).
AUTH_LIMIT = BodyLimit(max_bytes=4096, max_values=16)

router = APIRouter(tags=["self-service"], route_class=GuardedRoute)

COUNTER_ROLES = (Role.counter_operator, Role.supervisor)
READER_ROLES = (Role.counter_operator, Role.supervisor, Role.auditor)
Counter = Annotated[StaffPrincipal, Depends(require_roles(*COUNTER_ROLES))]
Reader = Annotated[StaffPrincipal, Depends(require_roles(*READER_ROLES))]


def _access_out(view: service.AccessView) -> AccessOut:
    return AccessOut(
        activated=view.activated,
        activated_at=view.activated_at,
        last_login_at=view.last_login_at,
        locked_until=view.locked_until,
        code_pending=view.code_pending,
        code_expires_at=view.code_expires_at,
    )


def _card_out(card: service.ResidentCard) -> ResidentCardOut:
    return ResidentCardOut(
        card_no=card.card_no,
        card_type=card.card_type,
        status=card.status,
        status_changed_at=card.status_changed_at,
        expires_on=card.expires_on,
        purse_balance=card.purse_balance,
        balance_to_load=card.balance_to_load,
        blacklisted=card.blacklisted,
    )


# --- the counter ------------------------------------------------------------------------------


@router.post(
    "/self-service/activation-codes",
    response_model=CodeIssued,
    status_code=201,
    summary="Issue a one-time activation code for the holder of an active card; it replaces any "
    "code issued before (counter operator, supervisor)",
)
async def issue_code(
    body: CardIn, principal: Counter, session: SessionDep, settings: SettingsDep
) -> CodeIssued:
    issued = await service.issue_code(session, settings, body.card_no, actor=principal.username)
    return CodeIssued(
        card_no=issued.card_no,
        activation_code=issued.code,
        expires_at=issued.expires_at,
        reactivation=issued.reactivation,
    )


@router.post(
    "/self-service/access",
    response_model=AccessOut,
    summary="The online access of a card's holder (counter operator, supervisor, auditor)",
)
@errors(404)
async def access(body: CardIn, principal: Reader, session: SessionDep) -> AccessOut:
    # POST: a card number stays out of URLs (access logs, proxies).
    return _access_out(await service.access_of_card(session, body.card_no))


@router.post(
    "/self-service/unlock",
    response_model=AccessOut,
    summary="Lift the lockout of a card holder's online access (counter operator, supervisor)",
)
@errors(404)
async def unlock(body: CardIn, principal: Counter, session: SessionDep) -> AccessOut:
    return _access_out(await service.unlock(session, body.card_no, actor=principal.username))


# --- the resident: activation and login -------------------------------------------------------


@router.post(
    "/self-service/activate",
    response_model=TokenOut,
    summary="Activate online access with the card number, the counter's activation code and a "
    "new password; returns a resident token",
)
@body_limit(AUTH_LIMIT)
@errors(401, 429)
async def activate(
    request: Request,
    body: ActivateIn,
    session: SessionDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    cache: CacheDep,
) -> TokenOut:
    try:
        result = await service.activate(
            sessions, session, settings, cache, card_no=body.card_no,
            code_text=body.activation_code, password=body.password, address=client_address(request, settings),
        )  # fmt: skip
    except service.ActivationFailed:
        # The wrong code's count must survive the error response, so keep it before raising.
        await session.commit()
        raise
    return TokenOut(access_token=result.token, expires_in=result.expires_in)


@router.post(
    "/self-service/login",
    response_model=TokenOut,
    summary="Log in with the card number and the password; returns a resident token",
)
@body_limit(AUTH_LIMIT)
@errors(401, 429)
async def login(
    request: Request,
    body: LoginIn,
    session: SessionDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    cache: CacheDep,
) -> TokenOut:
    try:
        result = await service.login(
            sessions, session, settings, cache, card_no=body.card_no, password=body.password,
            address=client_address(request, settings),
        )  # fmt: skip
    except service.LoginFailed:
        await session.commit()  # the failure count (lockout) survives the refusal
        raise
    return TokenOut(access_token=result.token, expires_in=result.expires_in)


# --- the resident's own routes ----------------------------------------------------------------


@router.get(
    "/me/account",
    response_model=ResidentAccountOut,
    summary="The resident's online account: balance, holds, PIN status",
)
async def my_account(
    resident: CurrentResident, session: SessionDep, settings: SettingsDep
) -> ResidentAccountOut:
    view = await service.account(session, settings, resident)
    return ResidentAccountOut(
        reference=view.reference,
        balance=view.balance,
        held=view.held,
        available=view.available,
        pin_set=view.pin_set,
        pin_locked=view.pin_locked,
        pin_tries_left=view.pin_tries_left,
    )


@router.get(
    "/me/statement",
    response_model=StatementOut,
    summary="The resident's paged statement, oldest first, local dates inclusive",
)
async def my_statement(
    resident: CurrentResident,
    session: SessionDep,
    settings: SettingsDep,
    from_date: date | None = None,
    to_date: date | None = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> StatementOut:
    reference, found = await service.statement(
        session, settings, resident, from_date=from_date, to_date=to_date, after=after,
        limit=limit,
    )  # fmt: skip
    return statement_out(reference, found)


@router.get(
    "/me/cards",
    response_model=CardsOut,
    summary="The resident's cards: status, purse balance as last known, blacklisted or not",
)
async def my_cards(resident: CurrentResident, session: SessionDep) -> CardsOut:
    return CardsOut(cards=[_card_out(c) for c in await service.cards_of(session, resident)])


@router.post(
    "/me/card/loss",
    response_model=LossOut,
    summary="Report the active card lost: blacklisted at once, as at a counter; every live "
    "resident token ends",
)
async def report_loss(resident: CurrentResident, session: SessionDep) -> LossOut:
    found = await service.report_loss(session, resident)
    return LossOut(
        card=_card_out(found.card),
        blacklist_version=found.blacklist_version,
        already_reported=found.already_reported,
        sessions_ended=not found.already_reported,
    )


@router.post(
    "/me/password",
    response_model=TokenOut,
    summary="Change the password (the old one required); every other token ends, a new one is "
    "returned",
)
@body_limit(AUTH_LIMIT)
@errors(423, 429)
async def change_password(
    request: Request,
    body: PasswordChangeIn,
    resident: CurrentResident,
    session: SessionDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    cache: CacheDep,
) -> TokenOut:
    try:
        result = await service.change_password(
            sessions, session, settings, cache, resident, old_password=body.old_password,
            new_password=body.new_password, address=client_address(request, settings),
        )  # fmt: skip
    except service.WrongPassword:
        await session.commit()  # the failure count (lockout) survives the refusal
        raise
    return TokenOut(access_token=result.token, expires_in=result.expires_in)


@router.post(
    "/me/logout",
    status_code=204,
    summary="Log out: every live token of the resident ends (on every device)",
)
async def logout(resident: CurrentResident, session: SessionDep) -> None:
    await service.logout(session, resident)
