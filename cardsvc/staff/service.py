"""Staff rules: account creation, login with lockout after repeated failures."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.audit import service as audit
from cardsvc.errors import Conflict, NotAuthenticated, NotFound, ValidationFailed
from cardsvc.settings import Settings
from cardsvc.staff import repository
from cardsvc.staff.auth import (
    Role,
    StaffPrincipal,
    hash_password,
    issue_token,
    parse_roles,
    verify_password,
)
from cardsvc.staff.models import StaffUser

MIN_PASSWORD_LENGTH = 10


class LoginFailed(NotAuthenticated):
    """Wrong username or password, or a locked account; one message for all (no user probing)."""


@dataclass(frozen=True)
class LoginResult:
    token: str
    principal: StaffPrincipal
    expires_in: int


def principal_of(user: StaffUser) -> StaffPrincipal:
    return StaffPrincipal(id=user.id, username=user.username, roles=parse_roles(user.roles))


async def create_staff(
    session: AsyncSession,
    *,
    username: str,
    password: str,
    roles: Iterable[Role],
    display_name: str = "",
    actor: str,
) -> StaffUser:
    role_set = sorted({Role(r) for r in roles})
    if not role_set:
        raise ValidationFailed("a staff account needs at least one role")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if await repository.by_username(session, username) is not None:
        raise Conflict(f"staff user {username!r} already exists")
    user = await repository.add(
        session,
        StaffUser(
            username=username,
            display_name=display_name,
            password_hash=hash_password(password),
            roles=",".join(r.value for r in role_set),
            active=True,
            failed_logins=0,
        ),
    )
    await audit.record(
        session,
        actor=actor,
        action="staff.create",
        entity="staff",
        entity_id=str(user.id),
        after={"username": username, "roles": [r.value for r in role_set]},
    )
    return user


async def authenticate(
    session: AsyncSession, settings: Settings, username: str, password: str
) -> StaffPrincipal:
    """Check a password; counts failures and locks the account after ``staff_max_failed_logins``.

    The failure count is flushed before LoginFailed is raised: the caller must commit it anyway.
    """
    user = await repository.by_username(session, username, for_update=True)
    now = clock.now()
    if user is None or not user.active:
        raise LoginFailed("invalid username or password")
    if user.locked_until is not None and user.locked_until > now:
        raise LoginFailed(
            "account locked after repeated failures; try later or ask an administrator"
        )
    if not verify_password(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= settings.staff_max_failed_logins:
            user.locked_until = now + timedelta(seconds=settings.staff_lockout_seconds)
            user.failed_logins = 0
        await session.flush()
        raise LoginFailed("invalid username or password")
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    await session.flush()
    return principal_of(user)


async def login(
    session: AsyncSession, settings: Settings, username: str, password: str
) -> LoginResult:
    principal = await authenticate(session, settings, username, password)
    return LoginResult(issue_token(settings, principal), principal, settings.token_ttl_seconds)


async def unlock(session: AsyncSession, staff_id: int, *, actor: str) -> StaffUser:
    user = await repository.get(session, staff_id)
    if user is None:
        raise NotFound(f"no staff user {staff_id}")
    before = {"locked_until": user.locked_until.isoformat() if user.locked_until else None}
    user.locked_until = None
    user.failed_logins = 0
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action="staff.unlock",
        entity="staff",
        entity_id=str(user.id),
        before=before,
    )
    return user
