"""Staff rules: account creation, login with lockout after repeated failures."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.audit import service as audit
from cardsvc.cache import CACHE_DOWN, Cache
from cardsvc.errors import Conflict, NotAuthenticated, NotFound, RateLimited, ValidationFailed
from cardsvc.logging import get_logger
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
log = get_logger(__name__)


class LoginFailed(NotAuthenticated):
    """Wrong username or password, or a locked or disabled account: one answer for all."""


@dataclass(frozen=True)
class LoginResult:
    token: str
    principal: StaffPrincipal
    expires_in: int


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
            password_hash=await hash_password(password),
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


# One answer for every refused login: a wrong password, an unknown or disabled account and a
# locked one look the same from outside (no probing for usernames or lockouts).
REFUSED = "invalid username or password, or the account is locked after repeated failures"


class TooManyFailures(RateLimited):
    """Too many failed logins from this client address within the window."""


def _address_key(address: str) -> str:
    return f"staff-login-failures:{address}"


async def _address_failures(cache: Cache, address: str | None) -> int:
    if address is None:
        return 0
    try:
        return int(await cache.get(_address_key(address)) or 0)
    except CACHE_DOWN:
        log.warning("staff.login_address_limit_unavailable")
        return 0  # documented: without the cache only the per-account lockout holds


async def _count_address_failure(cache: Cache, settings: Settings, address: str | None) -> None:
    if address is None:
        return
    with contextlib.suppress(*CACHE_DOWN):
        await cache.incr(_address_key(address), ttl=settings.staff_address_window_seconds)


async def authenticate(
    reads: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    settings: Settings,
    cache: Cache,
    username: str,
    password: str,
    *,
    address: str | None = None,
) -> StaffPrincipal:
    """Check a password (the staff lockout law: docs/architecture.md §11).

    The account is read in a short session of its own, the password is verified with no
    connection held, and the outcome is written in ``session`` by one atomic statement. Refusals
    raise LoginFailed after the failure is written: the caller commits anyway.
    """
    if await _address_failures(cache, address) >= settings.staff_max_failed_logins_per_address:
        raise TooManyFailures(
            "too many failed logins from this address: retry after "
            f"{settings.staff_address_window_seconds} seconds"
        )
    async with reads() as reading:
        user = await repository.by_username(reading, username)
    now = clock.now()
    usable = (
        user is not None and user.active and (user.locked_until is None or user.locked_until <= now)
    )
    matches = await verify_password(user.password_hash if usable and user else None, password)
    if not matches or user is None:
        await _count_address_failure(cache, settings, address)
        if usable and user is not None:
            await repository.record_failure(
                session,
                user.id,
                max_failures=settings.staff_max_failed_logins,
                locked_until=now + timedelta(seconds=settings.staff_lockout_seconds),
            )
        raise LoginFailed(REFUSED)
    version = await repository.record_success(session, user.id, now)
    if version is None:  # locked or disabled while the password was checked
        raise LoginFailed(REFUSED)
    return StaffPrincipal(user.id, user.username, parse_roles(user.roles), version)


async def login(
    reads: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    settings: Settings,
    cache: Cache,
    username: str,
    password: str,
    *,
    address: str | None,
) -> LoginResult:
    principal = await authenticate(
        reads, session, settings, cache, username, password, address=address
    )
    return LoginResult(issue_token(settings, principal), principal, settings.token_ttl_seconds)


async def _get(session: AsyncSession, staff_id: int) -> StaffUser:
    user = await repository.get(session, staff_id, for_update=True)
    if user is None:
        raise NotFound(f"no staff user {staff_id}")
    return user


async def set_active(
    session: AsyncSession, staff_id: int, active: bool, *, actor: str
) -> StaffUser:
    """Disable (every live token ends at once) or enable an account."""
    user = await _get(session, staff_id)
    if user.active != active:
        user.active = active
        user.session_version += 1
        await session.flush()
        await audit.record(
            session,
            actor=actor,
            action="staff.enable" if active else "staff.disable",
            entity="staff",
            entity_id=str(user.id),
        )
    return user


async def set_roles(
    session: AsyncSession, staff_id: int, roles: Iterable[Role], *, actor: str
) -> StaffUser:
    """Give the account these roles; its live tokens end at once (log in again)."""
    role_set = sorted({Role(r) for r in roles})
    if not role_set:
        raise ValidationFailed("a staff account needs at least one role")
    user = await _get(session, staff_id)
    before = sorted(parse_roles(user.roles))
    if before != role_set:
        user.roles = ",".join(r.value for r in role_set)
        user.session_version += 1
        await session.flush()
        await audit.record(
            session,
            actor=actor,
            action="staff.roles",
            entity="staff",
            entity_id=str(user.id),
            before={"roles": [r.value for r in before]},
            after={"roles": [r.value for r in role_set]},
        )
    return user


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


async def end_sessions(session: AsyncSession, staff_id: int, *, actor: str) -> None:
    """Log out: every live session and token of the account ends at once."""
    user = await _get(session, staff_id)
    user.session_version += 1
    await session.flush()
    await audit.record(
        session, actor=actor, action="staff.logout", entity="staff", entity_id=str(user.id)
    )
