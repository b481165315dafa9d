"""SQL of online accounts and counter movements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Executable, Table, bindparam, exists, literal, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.accounts.models import AccountMovement, MovementKind, OnlineAccount
from cardsvc.pgdirect import Guard, Query
from cardsvc.sql import insert_ignore, insert_ignore_stmt


async def insert_if_absent(session: AsyncSession, resident_id: int, now: datetime) -> None:
    """Create the resident's account row unless it exists (a concurrent creator wins quietly)."""
    await insert_ignore(
        session,
        OnlineAccount.__table__,
        {"resident_id": resident_id, "pin_failures": 0, "created_at": now},
    )


async def by_resident(
    session: AsyncSession, resident_id: int, *, for_update: bool = False
) -> OnlineAccount | None:
    stmt = select(OnlineAccount).where(OnlineAccount.resident_id == resident_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def by_reference(
    session: AsyncSession, reference: str, *, for_update: bool = False
) -> OnlineAccount | None:
    stmt = select(OnlineAccount).where(OnlineAccount.reference == reference)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def by_id(
    session: AsyncSession, account_id: int, *, for_update: bool = False
) -> OnlineAccount | None:
    stmt = select(OnlineAccount).where(OnlineAccount.id == account_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def movement_by_receipt(
    session: AsyncSession, kind: MovementKind, counter_code: str, receipt_no: str
) -> AccountMovement | None:
    stmt = select(AccountMovement).where(
        AccountMovement.kind == kind,
        AccountMovement.counter_code == counter_code,
        AccountMovement.receipt_no == receipt_no,
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def movement(
    session: AsyncSession, movement_id: int, *, for_update: bool = False
) -> AccountMovement | None:
    stmt = select(AccountMovement).where(AccountMovement.id == movement_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def claim_movement(session: AsyncSession, values: dict[str, Any]) -> AccountMovement | None:
    """Insert a movement and return it (tracked); None when its receipt was already used.

    ON CONFLICT DO NOTHING: of two concurrent requests with one receipt, the second waits for the
    first to commit and then inserts nothing, so it finds the first and answers with it."""
    stmt = insert_ignore_stmt(session, AccountMovement.__table__).values(**values)
    new_id = (await session.execute(stmt.returning(AccountMovement.__table__.c.id))).scalar()
    return None if new_id is None else await session.get(AccountMovement, int(new_id))


@dataclass(frozen=True, slots=True)
class PinTry:
    """A try taken on an account's PIN: what the HSM checks it against, and the count with it."""

    account_id: int
    reference: str
    offset: str
    pvk_version: int
    failures: int  # wrong PINs in a row, this try included


_accounts: Table = OnlineAccount.__table__  # type: ignore[assignment]

_TRY_COLUMNS = (
    _accounts.c.id,
    _accounts.c.reference,
    _accounts.c.pin_offset,
    _accounts.c.pin_pvk_version,
    _accounts.c.pin_failures,
)
# The PIN statements run on every online payment (pgdirect: straight on the driver on PostgreSQL).
_TAKE_PIN_TRY = Query(
    lambda _dialect: (
        update(_accounts)
        .where(
            _accounts.c.resident_id == bindparam("b_resident_id"),
            _accounts.c.pin_offset.is_not(None),
            _accounts.c.pin_failures < bindparam("b_limit"),
        )
        .values(pin_failures=_accounts.c.pin_failures + 1)
        .returning(*_TRY_COLUMNS)
    )
)


async def take_pin_try(session: AsyncSession, resident_id: int, limit: int) -> PinTry | None:
    """Count a try on the resident's PIN unless it has none or its tries are used up (None).

    One guarded UPDATE: concurrent tries serialize on the row, and each sees the others' counts."""
    row = await _TAKE_PIN_TRY.first(session, {"b_resident_id": resident_id, "b_limit": limit})
    return None if row is None else PinTry(int(row[0]), row[1], row[2], int(row[3]), int(row[4]))


def _build_take_pin_try_after(guard: Query) -> Callable[[str], Executable]:
    def build(dialect: str) -> Executable:
        marked = cast(Any, guard.statement(dialect)).cte("guard")
        passed = exists(select(literal(1)).select_from(marked))
        taken = (
            update(_accounts)
            .where(
                _accounts.c.resident_id == bindparam("b_resident_id"),
                _accounts.c.pin_offset.is_not(None),
                _accounts.c.pin_failures < bindparam("b_limit"),
                passed,
            )
            .values(pin_failures=_accounts.c.pin_failures + 1)
            .returning(*_TRY_COLUMNS)
            .cte("taken")
        )
        one = select(literal(1).label("one")).subquery("one")
        return select(passed.label("passed"), *taken.c).select_from(one.outerjoin(taken, true()))

    return build


_TAKE_PIN_TRY_AFTER: dict[Query, Query] = {}


async def take_pin_try_after(
    session: AsyncSession, guard: Guard, resident_id: int, limit: int
) -> tuple[bool, PinTry | None]:
    """:func:`take_pin_try` only if ``guard`` wrote its row: (whether it did, the try or None).
    One statement on PostgreSQL (the guard as its CTE: both commit or neither); elsewhere the
    guard runs first."""
    if session.get_bind().dialect.name != "postgresql":
        if await guard.query.first(session, guard.params) is None:
            return False, None
        return True, await take_pin_try(session, resident_id, limit)
    query = _TAKE_PIN_TRY_AFTER.get(guard.query)
    if query is None:
        query = _TAKE_PIN_TRY_AFTER[guard.query] = Query(_build_take_pin_try_after(guard.query))
    params = {**guard.params, "b_resident_id": resident_id, "b_limit": limit}
    row = await query.first(session, params)
    if row is None or not row[0]:
        return False, None
    if row[1] is None:
        return True, None
    return True, PinTry(int(row[1]), row[2], row[3], int(row[4]), int(row[5]))


_GIVE_PIN_TRY_BACK = Query(
    lambda _dialect: (
        update(_accounts)
        .where(_accounts.c.id == bindparam("b_account_id"), _accounts.c.pin_failures > 0)
        .values(pin_failures=_accounts.c.pin_failures - 1)
    )
)
_CLEAR_PIN_FAILURES = Query(
    lambda _dialect: (
        update(_accounts)
        .where(_accounts.c.id == bindparam("b_account_id"))
        .values(pin_failures=0, pin_locked_at=None)
    )
)
_STAMP_PIN_LOCK = Query(
    lambda _dialect: (
        update(_accounts)
        .where(_accounts.c.id == bindparam("b_account_id"), _accounts.c.pin_locked_at.is_(None))
        .values(pin_locked_at=bindparam("b_now", type_=_accounts.c.pin_locked_at.type))
    )
)


async def give_pin_try_back(session: AsyncSession, account_id: int) -> None:
    await _GIVE_PIN_TRY_BACK.rows(session, {"b_account_id": account_id})


async def clear_pin_failures(session: AsyncSession, account_id: int) -> None:
    await _CLEAR_PIN_FAILURES.rows(session, {"b_account_id": account_id})


async def stamp_pin_lock(session: AsyncSession, account_id: int, now: datetime) -> None:
    """When the PIN was locked (the lock itself is the count reaching the limit)."""
    await _STAMP_PIN_LOCK.rows(session, {"b_account_id": account_id, "b_now": now})
