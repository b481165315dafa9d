"""SQL of the staff domain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, bindparam, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.pgdirect import Query
from cardsvc.staff.models import StaffUser

_staff: Table = StaffUser.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Standing:
    """What a token is checked against, as the account's row is now."""

    username: str
    roles: str
    active: bool
    session_version: int
    locked_until: datetime | None


# Read on every staff request (pgdirect: straight on the driver on PostgreSQL).
_STANDING = Query(
    lambda _dialect: select(
        _staff.c.username,
        _staff.c.roles,
        _staff.c.active,
        _staff.c.session_version,
        _staff.c.locked_until,
    ).where(_staff.c.id == bindparam("b_id"))
)


async def standing(session: AsyncSession, staff_id: int) -> Standing | None:
    row = await _STANDING.first(session, {"b_id": staff_id})
    if row is None:
        return None
    return Standing(str(row[0]), str(row[1]), bool(row[2]), int(row[3]), row[4])


async def get(
    session: AsyncSession, staff_id: int, *, for_update: bool = False
) -> StaffUser | None:
    return await session.get(StaffUser, staff_id, with_for_update=for_update)


async def record_failure(
    session: AsyncSession, staff_id: int, *, max_failures: int, locked_until: datetime
) -> None:
    """One more failed login, atomically; the one that reaches ``max_failures`` locks the account
    and ends its sessions."""
    failures = StaffUser.failed_logins + 1
    reached = failures >= max_failures
    await session.execute(
        update(StaffUser)
        .where(StaffUser.id == staff_id)
        .values(
            failed_logins=case((reached, 0), else_=failures),
            locked_until=case((reached, locked_until), else_=StaffUser.locked_until),
            session_version=case(
                (reached, StaffUser.session_version + 1), else_=StaffUser.session_version
            ),
        )
        .execution_options(synchronize_session=False)
    )


async def record_success(session: AsyncSession, staff_id: int, now: datetime) -> int | None:
    """Clear the failures of a login that passed; the session version, or None when the account
    was locked or disabled meanwhile."""
    result = await session.execute(
        update(StaffUser)
        .where(
            StaffUser.id == staff_id,
            StaffUser.active.is_(True),
            or_(StaffUser.locked_until.is_(None), StaffUser.locked_until <= now),
        )
        .values(failed_logins=0, locked_until=None, last_login_at=now)
        .returning(StaffUser.session_version)
        .execution_options(synchronize_session=False)
    )
    version: int | None = result.scalar_one_or_none()
    return version


async def by_username(
    session: AsyncSession, username: str, *, for_update: bool = False
) -> StaffUser | None:
    stmt = select(StaffUser).where(StaffUser.username == username)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def add(session: AsyncSession, user: StaffUser) -> StaffUser:
    session.add(user)
    await session.flush()
    return user


async def list_all(session: AsyncSession) -> list[StaffUser]:
    return list((await session.execute(select(StaffUser).order_by(StaffUser.id))).scalars())
