"""SQL of resident self-service: the resident's online credential."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.selfservice.models import ResidentCredential
from cardsvc.sql import insert_ignore


async def get(session: AsyncSession, credential_id: int) -> ResidentCredential | None:
    return await session.get(ResidentCredential, credential_id)


async def by_resident(
    session: AsyncSession, resident_id: int, *, for_update: bool = False
) -> ResidentCredential | None:
    stmt = select(ResidentCredential).where(ResidentCredential.resident_id == resident_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def insert_if_absent(session: AsyncSession, resident_id: int, now: datetime) -> None:
    """The resident's credential row unless it exists (a concurrent creator wins quietly)."""
    await insert_ignore(
        session,
        ResidentCredential.__table__,
        {
            "resident_id": resident_id,
            "failed_logins": 0,
            "code_failures": 0,
            "session_version": 0,
            "created_at": now,
        },
    )


async def record_login_failure(
    session: AsyncSession, credential_id: int, *, max_failures: int, locked_until: datetime
) -> None:
    """One more wrong password, atomically; the one that reaches ``max_failures`` locks logins
    until ``locked_until`` (live tokens stay: they were had with the right password)."""
    failures = ResidentCredential.failed_logins + 1
    reached = failures >= max_failures
    await session.execute(
        update(ResidentCredential)
        .where(ResidentCredential.id == credential_id)
        .values(
            failed_logins=case((reached, 0), else_=failures),
            locked_until=case((reached, locked_until), else_=ResidentCredential.locked_until),
        )
        .execution_options(synchronize_session=False)
    )


async def record_login(session: AsyncSession, credential_id: int, now: datetime) -> int | None:
    """Clear the failures of a login that passed; the session version, or None when the
    credential was locked meanwhile."""
    result = await session.execute(
        update(ResidentCredential)
        .where(
            ResidentCredential.id == credential_id,
            ResidentCredential.password_hash.is_not(None),
            or_(ResidentCredential.locked_until.is_(None), ResidentCredential.locked_until <= now),
        )
        .values(failed_logins=0, locked_until=None, last_login_at=now)
        .returning(ResidentCredential.session_version)
        .execution_options(synchronize_session=False)
    )
    version: int | None = result.scalar_one_or_none()
    return version


async def record_code_failure(
    session: AsyncSession, credential_id: int, code_hash: str, *, max_failures: int
) -> None:
    """One more wrong code against the live code ``code_hash``; the one that reaches
    ``max_failures`` voids it."""
    failures = ResidentCredential.code_failures + 1
    reached = failures >= max_failures
    await session.execute(
        update(ResidentCredential)
        .where(ResidentCredential.id == credential_id, ResidentCredential.code_hash == code_hash)
        .values(
            code_failures=failures,
            code_hash=case((reached, None), else_=ResidentCredential.code_hash),
        )
        .execution_options(synchronize_session=False)
    )


async def activate(
    session: AsyncSession, credential_id: int, code_hash: str, password_hash: str, now: datetime
) -> int | None:
    """Spend the live code ``code_hash`` and set the password, lifting a lockout and ending every
    earlier token; the new session version, or None when that code is no longer live (spent by a
    concurrent activation, or superseded by a new one)."""
    result = await session.execute(
        update(ResidentCredential)
        .where(ResidentCredential.id == credential_id, ResidentCredential.code_hash == code_hash)
        .values(
            password_hash=password_hash,
            activated_at=case(
                (ResidentCredential.activated_at.is_(None), now),
                else_=ResidentCredential.activated_at,
            ),
            password_changed_at=now,
            last_login_at=now,
            failed_logins=0,
            locked_until=None,
            session_version=ResidentCredential.session_version + 1,
            code_hash=None,
            code_card_id=None,
            code_expires_at=None,
            code_failures=0,
        )
        .returning(ResidentCredential.session_version)
        .execution_options(synchronize_session=False)
    )
    version: int | None = result.scalar_one_or_none()
    return version


async def change_password(
    session: AsyncSession,
    credential_id: int,
    *,
    session_version: int,
    old_hash: str,
    new_hash: str,
    now: datetime,
) -> int | None:
    """Replace the password ``old_hash`` by ``new_hash`` for the session ``session_version``,
    ending every other token; the new version, or None when either changed meanwhile."""
    result = await session.execute(
        update(ResidentCredential)
        .where(
            ResidentCredential.id == credential_id,
            ResidentCredential.session_version == session_version,
            ResidentCredential.password_hash == old_hash,
        )
        .values(
            password_hash=new_hash,
            password_changed_at=now,
            failed_logins=0,
            session_version=ResidentCredential.session_version + 1,
        )
        .returning(ResidentCredential.session_version)
        .execution_options(synchronize_session=False)
    )
    version: int | None = result.scalar_one_or_none()
    return version


async def end_sessions(session: AsyncSession, credential_id: int) -> None:
    await session.execute(
        update(ResidentCredential)
        .where(ResidentCredential.id == credential_id)
        .values(session_version=ResidentCredential.session_version + 1)
        .execution_options(synchronize_session=False)
    )
