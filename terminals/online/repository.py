"""SQL of online authorizations and daily usage."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.sql import insert_ignore_stmt
from terminals.online.models import AuthStatus, OnlineAuthorization, OnlineDailyUsage


async def insert_if_new(
    session: AsyncSession, values: Mapping[str, Any]
) -> OnlineAuthorization | None:
    """Insert a message row and return it; None when (terminal_no, terminal_serial) exists.

    On PostgreSQL a concurrent insert of the same key waits for the other transaction and then
    does nothing, so exactly one request processes a serial. One round trip: INSERT ... RETURNING
    mapped onto the entity; the values go as parameters so the statement compiles once.
    """
    table: Table = OnlineAuthorization.__table__  # type: ignore[assignment]
    stmt = insert_ignore_stmt(session, table).returning(*table.c)
    orm = select(OnlineAuthorization).from_statement(stmt)
    return (await session.scalars(orm, dict(values))).one_or_none()


async def get(session: AsyncSession, authorization_id: int) -> OnlineAuthorization:
    row = await session.get(OnlineAuthorization, authorization_id)
    if row is None:
        raise LookupError(f"online authorization {authorization_id} vanished")
    return row


async def by_serial(
    session: AsyncSession, terminal_no: str, terminal_serial: int, *, for_update: bool = False
) -> OnlineAuthorization | None:
    stmt = select(OnlineAuthorization).where(
        OnlineAuthorization.terminal_no == terminal_no,
        OnlineAuthorization.terminal_serial == terminal_serial,
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def reserve_usage(
    session: AsyncSession, card_no: str, local_date: date, amount: int, limit: int
) -> bool:
    """Add ``amount`` to the card's usage of the day unless that passes ``limit``.

    One upsert whose update is guarded: under PostgreSQL the row lock serializes concurrent
    reservations and the condition is re-checked on the locked row, so two can never both pass
    the limit.
    """
    if amount > limit:
        return False
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    table: Table = OnlineDailyUsage.__table__  # type: ignore[assignment]
    stmt = (
        insert(table)
        .values(card_no=card_no, local_date=local_date, used=amount)
        .on_conflict_do_update(
            index_elements=[table.c.card_no, table.c.local_date],
            set_={"used": table.c.used + amount},
            where=table.c.used + amount <= limit,
        )
        .returning(table.c.used)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def release_usage(session: AsyncSession, card_no: str, local_date: date, amount: int) -> None:
    if amount <= 0:
        return
    stmt = (
        update(OnlineDailyUsage)
        .where(OnlineDailyUsage.card_no == card_no, OnlineDailyUsage.local_date == local_date)
        .values(used=OnlineDailyUsage.used - amount)
    )
    await session.execute(stmt)


async def usage(session: AsyncSession, card_no: str, local_date: date) -> int:
    stmt = select(OnlineDailyUsage.used).where(
        OnlineDailyUsage.card_no == card_no, OnlineDailyUsage.local_date == local_date
    )
    return int((await session.execute(stmt)).scalar_one_or_none() or 0)


async def due_preauths(
    session: AsyncSession, now: datetime, limit: int = 500
) -> list[OnlineAuthorization]:
    """Live pre-authorizations past their expiry, locked (skipping rows another worker holds)."""
    stmt = (
        select(OnlineAuthorization)
        .where(OnlineAuthorization.status == AuthStatus.held, OnlineAuthorization.expires_at <= now)
        .order_by(OnlineAuthorization.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())


async def of_card(session: AsyncSession, card_no: str) -> list[OnlineAuthorization]:
    stmt = (
        select(OnlineAuthorization)
        .where(OnlineAuthorization.card_no == card_no)
        .order_by(OnlineAuthorization.id)
    )
    return list((await session.execute(stmt)).scalars())
