"""SQL of online authorizations and daily usage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, BindParameter, Table, bindparam, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.blacklist.models import BlacklistEntry
from cardsvc.cards.models import Card
from cardsvc.clearing.repository import OPEN_DAY
from cardsvc.sql import PerDialect, dialect_insert
from terminals.online.models import AuthStatus, OnlineAuthorization, OnlineDailyUsage


def _build_insert_if_new(dialect: str) -> Any:
    table: Table = OnlineAuthorization.__table__  # type: ignore[assignment]
    insert = dialect_insert(dialect, table).on_conflict_do_nothing().returning(*table.c)
    return select(OnlineAuthorization).from_statement(insert)


_insert_if_new = PerDialect(_build_insert_if_new)


async def insert_if_new(
    session: AsyncSession, values: Mapping[str, Any]
) -> OnlineAuthorization | None:
    """Insert a message row and return it; None when (terminal_no, terminal_serial) exists.

    On PostgreSQL a concurrent insert of the same key waits for the other transaction and then
    does nothing, so exactly one request processes a serial. One round trip: INSERT ... RETURNING
    mapped onto the entity; the values go as parameters so the statement compiles once.
    """
    return (await session.scalars(_insert_if_new(session), dict(values))).one_or_none()


@dataclass(frozen=True, slots=True)
class CardStanding:
    """What an online payment or load needs to know of a card, read in one round trip."""

    card: Card
    blacklisted: bool  # on the blacklist with an effective time already passed
    open_clearing_date: date | None  # None when no business day is open yet


def _build_card_standing() -> Any:
    listed = (
        exists()
        .where(BlacklistEntry.asn == Card.asn, BlacklistEntry.effective_at <= bindparam("now"))
        .correlate(Card)
    )
    return select(Card, listed, OPEN_DAY.scalar_subquery()).where(Card.asn == bindparam("asn"))


_CARD_STANDING = _build_card_standing()


async def card_standing(session: AsyncSession, asn: str, now: datetime) -> CardStanding | None:
    """The card with this ASN, whether it is blacklisted, and the open clearing day; None when no
    card has this ASN."""
    params = {"asn": asn.upper(), "now": now}
    row = (await session.execute(_CARD_STANDING, params)).one_or_none()
    if row is None:
        return None
    return CardStanding(card=row[0], blacklisted=bool(row[1]), open_clearing_date=row[2])


async def get(session: AsyncSession, authorization_id: int) -> OnlineAuthorization:
    row = await session.get(OnlineAuthorization, authorization_id)
    if row is None:
        raise LookupError(f"online authorization {authorization_id} vanished")
    return row


_BY_SERIAL = select(OnlineAuthorization).where(
    OnlineAuthorization.terminal_no == bindparam("terminal_no"),
    OnlineAuthorization.terminal_serial == bindparam("terminal_serial"),
)
_BY_SERIAL_FOR_UPDATE = _BY_SERIAL.with_for_update()


async def by_serial(
    session: AsyncSession, terminal_no: str, terminal_serial: int, *, for_update: bool = False
) -> OnlineAuthorization | None:
    stmt = _BY_SERIAL_FOR_UPDATE if for_update else _BY_SERIAL
    params = {"terminal_no": terminal_no, "terminal_serial": terminal_serial}
    return (await session.execute(stmt, params)).scalar_one_or_none()


def _build_reserve_usage(dialect: str) -> Any:
    table: Table = OnlineDailyUsage.__table__  # type: ignore[assignment]
    amount: BindParameter[int] = bindparam("amount", type_=BigInteger)
    return (
        dialect_insert(dialect, table)
        .values(card_no=bindparam("card_no"), local_date=bindparam("local_date"), used=amount)
        .on_conflict_do_update(
            index_elements=[table.c.card_no, table.c.local_date],
            set_={"used": table.c.used + amount},
            where=table.c.used + amount <= bindparam("limit"),
        )
        .returning(table.c.used)
    )


_reserve_usage = PerDialect(_build_reserve_usage)


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
    params = {"card_no": card_no, "local_date": local_date, "amount": amount, "limit": limit}
    return (await session.execute(_reserve_usage(session), params)).scalar_one_or_none() is not None


_usage: Table = OnlineDailyUsage.__table__  # type: ignore[assignment]
_RELEASE_USAGE = (
    update(_usage)
    .where(_usage.c.card_no == bindparam("b_card_no"), _usage.c.local_date == bindparam("b_date"))
    .values(used=_usage.c.used - bindparam("b_amount", type_=BigInteger))
)


async def release_usage(session: AsyncSession, card_no: str, local_date: date, amount: int) -> None:
    if amount <= 0:
        return
    params = {"b_card_no": card_no, "b_date": local_date, "b_amount": amount}
    await session.execute(_RELEASE_USAGE, params)


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
