"""Staff routes: login, accounts (administrator), whoami."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from cardsvc import clock
from cardsvc.api.limits import BodyLimit, GuardedRoute, body_limit
from cardsvc.api.openapi import errors
from cardsvc.deps import CacheDep, SessionDep, SessionsDep, SettingsDep, client_address
from cardsvc.staff import service
from cardsvc.staff.auth import Role, StaffPrincipal, parse_roles
from cardsvc.staff.deps import current_principal, require_roles
from cardsvc.staff.models import StaffUser
from cardsvc.staff.schemas import LoginRequest, RolesChange, StaffCreate, StaffOut, TokenOut

# A username and a password (256 characters, escaped as \uXXXX at worst).
LOGIN_LIMIT = BodyLimit(max_bytes=4096, max_values=16)

router = APIRouter(prefix="/staff", tags=["staff"], route_class=GuardedRoute)

StaffId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Admin = Annotated[StaffPrincipal, Depends(require_roles(Role.administrator))]


def _out(user: StaffUser) -> StaffOut:
    return StaffOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        roles=sorted(parse_roles(user.roles)),
        active=user.active,
        locked=user.locked_until is not None and user.locked_until > clock.now(),
    )


@router.post(
    "/login", response_model=TokenOut, summary="Log in (any staff); returns a bearer token"
)
@body_limit(LOGIN_LIMIT)
@errors(401, 429)
async def login(
    request: Request,
    body: LoginRequest,
    session: SessionDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    cache: CacheDep,
) -> TokenOut:
    """Lockout: after ``CARDSVC_STAFF_MAX_FAILED_LOGINS`` failures in a row the account is locked
    for ``CARDSVC_STAFF_LOCKOUT_SECONDS`` (and its tokens end); after
    ``CARDSVC_STAFF_MAX_FAILED_LOGINS_PER_ADDRESS`` failures from one address within
    ``CARDSVC_STAFF_ADDRESS_WINDOW_SECONDS`` that address gets 429 until the window ends. Every
    refused login answers the same 401."""
    address = client_address(request, settings)
    try:
        result = await service.login(
            sessions, session, settings, cache, body.username, body.password, address=address
        )
    except service.LoginFailed:
        # The failure count must survive the error response (lockout), so keep it before raising.
        await session.commit()
        raise
    return TokenOut(
        access_token=result.token,
        expires_in=result.expires_in,
        roles=sorted(result.principal.roles),
    )


@router.get("/me", response_model=StaffOut, summary="The logged-in account (any role)")
async def me(
    principal: Annotated[StaffPrincipal, Depends(current_principal)], session: SessionDep
) -> StaffOut:
    from cardsvc.staff import repository

    user = await repository.get(session, principal.id)
    assert user is not None  # noqa: S101 - current_principal just read it
    return _out(user)


@router.post(
    "", response_model=StaffOut, status_code=201, summary="Create a staff account (administrator)"
)
async def create(body: StaffCreate, principal: Admin, session: SessionDep) -> StaffOut:
    user = await service.create_staff(
        session,
        username=body.username,
        password=body.password,
        roles=body.roles,
        display_name=body.display_name,
        actor=principal.username,
    )
    return _out(user)


@router.post(
    "/{staff_id}/unlock", response_model=StaffOut, summary="Lift a lockout (administrator)"
)
async def unlock(staff_id: StaffId, principal: Admin, session: SessionDep) -> StaffOut:
    return _out(await service.unlock(session, staff_id, actor=principal.username))


@router.post(
    "/{staff_id}/disable",
    response_model=StaffOut,
    summary="Disable an account; its live tokens end at once (administrator)",
)
async def disable(staff_id: StaffId, principal: Admin, session: SessionDep) -> StaffOut:
    return _out(await service.set_active(session, staff_id, False, actor=principal.username))


@router.post(
    "/{staff_id}/enable", response_model=StaffOut, summary="Enable an account (administrator)"
)
async def enable(staff_id: StaffId, principal: Admin, session: SessionDep) -> StaffOut:
    return _out(await service.set_active(session, staff_id, True, actor=principal.username))


@router.put(
    "/{staff_id}/roles",
    response_model=StaffOut,
    summary="Set an account's roles; its live tokens end at once (administrator)",
)
async def set_roles(
    staff_id: StaffId, body: RolesChange, principal: Admin, session: SessionDep
) -> StaffOut:
    return _out(await service.set_roles(session, staff_id, body.roles, actor=principal.username))
