"""The staff's web dependencies: the bearer token of a request, and the roles an endpoint admits.

Every request re-reads the staff row: a token of an account locked, disabled or given other roles
since it was issued (its session version is older than the row's) is refused at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.deps import SessionsDep, SettingsDep
from cardsvc.errors import NotAuthenticated
from cardsvc.pgdirect import statements_on_their_own
from cardsvc.settings import Settings
from cardsvc.staff import repository
from cardsvc.staff.auth import Role, StaffPrincipal, check_roles, parse_roles, verify_token

_bearer = HTTPBearer(auto_error=False)


async def principal_for_token(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, token: str
) -> StaffPrincipal:
    """The staff a token (a bearer token, or the finance pages' session cookie) names, as its row
    is now: NotAuthenticated when the token is forged or expired, or the account was locked,
    disabled or given other roles since."""
    claimed = verify_token(settings, token)
    # A short read of its own: the request's session opens only when the route writes, so a route
    # that asks the HSM first holds no connection meanwhile (docs/architecture.md §11). One
    # statement, a transaction of its own on PostgreSQL (no BEGIN, no ROLLBACK).
    async with sessions() as reading:
        statements_on_their_own(reading)
        user = await repository.standing(reading, claimed.id)
    if (
        user is None
        or not user.active
        or user.username != claimed.username
        or user.session_version != claimed.session_version
        or (user.locked_until is not None and user.locked_until > clock.now())
    ):
        raise NotAuthenticated("session ended: log in again")
    # Roles come from the row, not the token.
    return StaffPrincipal(
        id=claimed.id,
        username=user.username,
        roles=parse_roles(user.roles),
        session_version=user.session_version,
    )


async def current_principal(
    sessions: SessionsDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> StaffPrincipal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated("bearer token required")
    return await principal_for_token(sessions, settings, credentials.credentials)


current_principal.__admits__ = ()  # type: ignore[attr-defined]  # any staff (cardsvc.api.openapi)


def require_roles(*roles: Role) -> Callable[..., Awaitable[StaffPrincipal]]:
    """FastAPI dependency admitting staff that hold any of ``roles`` (401 without token, 403 else)."""
    admitted = frozenset(roles)

    async def dependency(
        principal: Annotated[StaffPrincipal, Depends(current_principal)],
    ) -> StaffPrincipal:
        return check_roles(principal, admitted)

    dependency.__doc__ = f"Admits roles: {', '.join(sorted(admitted))}"
    dependency.__admits__ = tuple(sorted(admitted))  # type: ignore[attr-defined]
    return dependency
