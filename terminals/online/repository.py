"""SQL of online authorizations and daily usage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Table,
    bindparam,
    exists,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.blacklist.models import BlacklistEntry
from cardsvc.cards.models import Card, CardStatus, CardType
from cardsvc.clearing.models import OPEN_DAY
from cardsvc.pgdirect import Query
from cardsvc.sql import dialect_insert
from terminals.online.models import AuthStatus, MessageKind, OnlineAuthorization, OnlineDailyUsage

_messages: Table = OnlineAuthorization.__table__  # type: ignore[assignment]
# Every column but the surrogate key: a message row is written whole, first as claimed and at the
# end as decided.
_MESSAGE_COLUMNS = tuple(c.key for c in _messages.c if c.key != "id")


def _message_values() -> dict[str, Any]:
    return {name: bindparam(name, type_=_messages.c[name].type) for name in _MESSAGE_COLUMNS}


_INSERT_IF_NEW = Query(
    lambda dialect: (
        dialect_insert(dialect, _messages)
        .values(_message_values())
        .on_conflict_do_nothing()
        .returning(_messages.c.id)
    )
)
_SAVE = Query(
    lambda _dialect: (
        update(_messages).where(_messages.c.id == bindparam("message_id")).values(_message_values())
    )
)


async def insert_if_new(
    session: AsyncSession, values: Mapping[str, Any]
) -> OnlineAuthorization | None:
    """Insert a message row and return it; None when (terminal_no, terminal_serial) exists.

    On PostgreSQL a concurrent insert of the same key waits for the other transaction and then
    does nothing, so exactly one request processes a serial. Columns not in ``values`` are NULL.
    """
    row = {name: values.get(name) for name in _MESSAGE_COLUMNS}
    new_id = await _INSERT_IF_NEW.scalar(session, row)
    return None if new_id is None else OnlineAuthorization(id=new_id, **row)


def _build_insert_with_standing(dialect: str) -> Any:
    inserted = _INSERT_IF_NEW.statement(dialect).cte("inserted")  # type: ignore[attr-defined]
    standing = _build_card_standing(dialect).subquery("standing")
    one = select(literal(1).label("one")).subquery("one")
    return select(select(inserted.c.id).scalar_subquery(), *standing.c).select_from(
        one.outerjoin(standing, true())
    )


_INSERT_WITH_STANDING = Query(_build_insert_with_standing)


async def insert_if_new_with_standing(
    session: AsyncSession, values: Mapping[str, Any], asn: str, now: datetime
) -> tuple[OnlineAuthorization | None, CardStanding | None]:
    """:func:`insert_if_new` and :func:`card_standing` in one round trip on PostgreSQL (the
    standing is read whether or not the row was new). The card is the message's own: one ``asn``
    parameter serves the row and the read."""
    if values.get("asn") != asn.upper():
        raise ValueError("the standing read with a claim is the claiming message's own card")
    if session.get_bind().dialect.name != "postgresql":
        return await insert_if_new(session, values), await card_standing(session, asn, now)
    row = {name: values.get(name) for name in _MESSAGE_COLUMNS}
    found = await _INSERT_WITH_STANDING.first(session, {**row, "asn": asn.upper(), "now": now})
    if found is None:  # pragma: no cover - the statement always returns its one row
        return None, None
    new = None if found[0] is None else OnlineAuthorization(id=found[0], **row)
    return new, None if found[1] is None else _standing(found[1:])


async def save(session: AsyncSession, message: OnlineAuthorization) -> None:
    """Write a changed message row back, whole.

    Message rows read or inserted here are not tracked by the session: the services change them
    and write each changed one with this single UPDATE (the ORM's unit of work cost more CPU on
    every authorization than all its statements did).
    """
    values = {name: getattr(message, name) for name in _MESSAGE_COLUMNS}
    await _SAVE.rows(session, {**values, "message_id": message.id})


@dataclass(frozen=True, slots=True)
class CardStanding:
    """What an online payment or load needs to know of a card, read in one round trip."""

    card_no: str
    resident_id: int
    card_type: CardType
    status: CardStatus
    expires_on: date | None
    blacklisted: bool  # on the blacklist with an effective time already passed
    open_clearing_date: date | None  # None when no business day is open yet


def _build_card_standing(_dialect: str) -> Any:
    cards: Table = Card.__table__  # type: ignore[assignment]
    listed = (
        exists()
        .where(BlacklistEntry.asn == cards.c.asn, BlacklistEntry.effective_at <= bindparam("now"))
        .correlate(cards)
    )
    columns = (cards.c.card_no, cards.c.resident_id, cards.c.card_type, cards.c.status)
    return select(*columns, cards.c.expires_on, listed, OPEN_DAY.scalar_subquery()).where(
        cards.c.asn == bindparam("asn")
    )


_CARD_STANDING = Query(_build_card_standing)


def _build_card_standing_at_serial(dialect: str) -> Any:
    answered = (
        exists()
        .where(
            _messages.c.terminal_no == bindparam("terminal_no"),
            _messages.c.terminal_serial == bindparam("terminal_serial"),
        )
        .correlate(None)
    )
    return _build_card_standing(dialect).add_columns(answered)


_CARD_STANDING_AT_SERIAL = Query(_build_card_standing_at_serial)


async def card_standing(session: AsyncSession, asn: str, now: datetime) -> CardStanding | None:
    """The card with this ASN, whether it is blacklisted, and the open clearing day; None when no
    card has this ASN."""
    row = await _CARD_STANDING.first(session, {"asn": asn.upper(), "now": now})
    return None if row is None else _standing(row)


def _standing(row: Sequence[Any]) -> CardStanding:
    return CardStanding(
        card_no=row[0],
        resident_id=row[1],
        card_type=CardType(row[2]),
        status=CardStatus(row[3]),
        expires_on=row[4],
        blacklisted=bool(row[5]),
        open_clearing_date=row[6],
    )


async def card_standing_at_serial(
    session: AsyncSession, asn: str, now: datetime, terminal_no: str, terminal_serial: int
) -> tuple[CardStanding | None, bool]:
    """:func:`card_standing`, and whether the terminal's serial already holds a message, in one
    round trip (a card no one has: None and False, whatever the serial holds)."""
    params = {
        "asn": asn.upper(), "now": now, "terminal_no": terminal_no,
        "terminal_serial": terminal_serial,
    }  # fmt: skip
    row = await _CARD_STANDING_AT_SERIAL.first(session, params)
    if row is None:
        return None, False
    return _standing(row), bool(row[7])


_MESSAGE_ROW = (_messages.c.id, *(_messages.c[name] for name in _MESSAGE_COLUMNS))


def _message(row: Sequence[Any]) -> OnlineAuthorization:
    values = dict(zip(("id", *_MESSAGE_COLUMNS), row, strict=True))
    values["kind"] = MessageKind(values["kind"])
    values["status"] = AuthStatus(values["status"])
    return OnlineAuthorization(**values)


_BY_ID = Query(lambda _dialect: select(*_MESSAGE_ROW).where(_messages.c.id == bindparam("id")))


async def get(session: AsyncSession, authorization_id: int) -> OnlineAuthorization:
    """A message row, not tracked by the session (like every row here: see :func:`save`)."""
    row = await _BY_ID.first(session, {"id": authorization_id})
    if row is None:
        raise LookupError(f"online authorization {authorization_id} vanished")
    return _message(row)


def _build_by_serial(_dialect: str) -> Any:
    return select(*_MESSAGE_ROW).where(
        _messages.c.terminal_no == bindparam("terminal_no"),
        _messages.c.terminal_serial == bindparam("terminal_serial"),
    )


_BY_SERIAL = Query(_build_by_serial)
_BY_SERIAL_FOR_UPDATE = Query(lambda dialect: _build_by_serial(dialect).with_for_update())


async def by_serial(
    session: AsyncSession, terminal_no: str, terminal_serial: int, *, for_update: bool = False
) -> OnlineAuthorization | None:
    """The terminal's message ``terminal_serial`` (row-locked with ``for_update``), untracked."""
    query = _BY_SERIAL_FOR_UPDATE if for_update else _BY_SERIAL
    params = {"terminal_no": terminal_no, "terminal_serial": terminal_serial}
    row = await query.first(session, params)
    return None if row is None else _message(row)


_BY_SERIAL_LOCKED_WITH_OPEN_DAY = Query(
    lambda dialect: (
        _build_by_serial(dialect)
        .add_columns(OPEN_DAY.scalar_subquery())
        .with_for_update(of=_messages)
    )
)


async def by_serial_locked_with_open_day(
    session: AsyncSession, terminal_no: str, terminal_serial: int
) -> tuple[OnlineAuthorization | None, date | None]:
    """The terminal's message ``terminal_serial``, row-locked and untracked, and the open clearing
    day (None when none is open yet), in one round trip; (None, None) when there is no message."""
    params = {"terminal_no": terminal_no, "terminal_serial": terminal_serial}
    row = await _BY_SERIAL_LOCKED_WITH_OPEN_DAY.first(session, params)
    if row is None:
        return None, None
    return _message(row[:-1]), row[-1]


def _save_two(_dialect: str) -> Any:
    first = (
        update(_messages)
        .where(_messages.c.id == bindparam("first_id"))
        .values(
            {
                name: bindparam(f"first_{name}", type_=_messages.c[name].type)
                for name in _MESSAGE_COLUMNS
            }
        )
        .returning(_messages.c.id)
        .cte("first")
    )
    return (
        update(_messages)
        .where(_messages.c.id == bindparam("message_id"))
        .values(_message_values())
        .add_cte(first)
    )


_SAVE_TWO = Query(_save_two)


async def save_two(
    session: AsyncSession, first: OnlineAuthorization, second: OnlineAuthorization
) -> None:
    """:func:`save` of two different message rows, in one statement on PostgreSQL."""
    if session.get_bind().dialect.name != "postgresql":
        await save(session, first)
        await save(session, second)
        return
    values = {name: getattr(second, name) for name in _MESSAGE_COLUMNS}
    firsts = {f"first_{name}": getattr(first, name) for name in _MESSAGE_COLUMNS}
    await _SAVE_TWO.rows(
        session, {**values, **firsts, "message_id": second.id, "first_id": first.id}
    )


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


_RESERVE_USAGE = Query(_build_reserve_usage)


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
    return await _RESERVE_USAGE.first(session, params) is not None


_usage: Table = OnlineDailyUsage.__table__  # type: ignore[assignment]
_RELEASE_USAGE = Query(
    lambda _dialect: (
        update(_usage)
        .where(
            _usage.c.card_no == bindparam("b_card_no"), _usage.c.local_date == bindparam("b_date")
        )
        .values(used=_usage.c.used - bindparam("b_amount", type_=BigInteger))
    )
)


async def release_usage(session: AsyncSession, card_no: str, local_date: date, amount: int) -> None:
    if amount <= 0:
        return
    params = {"b_card_no": card_no, "b_date": local_date, "b_amount": amount}
    await _RELEASE_USAGE.rows(session, params)


async def usage(session: AsyncSession, card_no: str, local_date: date) -> int:
    stmt = select(OnlineDailyUsage.used).where(
        OnlineDailyUsage.card_no == card_no, OnlineDailyUsage.local_date == local_date
    )
    return int((await session.execute(stmt)).scalar_one_or_none() or 0)


async def due_preauths(
    session: AsyncSession, now: datetime, limit: int = 500
) -> list[OnlineAuthorization]:
    """Live pre-authorizations past their expiry, locked (skipping rows another worker holds),
    untracked."""
    stmt = (
        select(*_MESSAGE_ROW)
        .where(_messages.c.status == AuthStatus.held, _messages.c.expires_at <= now)
        .order_by(_messages.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_message(row) for row in await session.execute(stmt)]


async def of_card(session: AsyncSession, card_no: str) -> list[OnlineAuthorization]:
    stmt = select(*_MESSAGE_ROW).where(_messages.c.card_no == card_no).order_by(_messages.c.id)
    return [_message(row) for row in await session.execute(stmt)]
