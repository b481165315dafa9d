"""Direct queries (``cardsvc.pgdirect``): the same rows on both engines, inside the session's
transaction, with the column types' bind conversions, and refused when they cannot be compiled once."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import Table, bindparam, insert, literal, select
from sqlalchemy.dialects.postgresql import asyncpg
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cardsvc.db import UTCDateTime
from cardsvc.pgdirect import Query, _compile, statements_on_their_own
from terminals.online.models import OnlineDailyUsage

usage: Table = OnlineDailyUsage.__table__  # type: ignore[assignment]

ADD = Query(
    lambda _dialect: insert(usage).values(
        card_no=bindparam("card_no"), local_date=bindparam("day"), used=bindparam("used")
    )
)
USED = Query(
    lambda _dialect: (
        select(usage.c.used, literal("fixed"), bindparam("at", type_=UTCDateTime()))
        .where(usage.c.card_no == bindparam("card_no"))
        .order_by(usage.c.local_date)
    )
)
DAY = date(2026, 11, 23)


async def count(sessions: async_sessionmaker[AsyncSession], card_no: str) -> int:
    async with sessions() as session:
        return len(await USED.rows(session, {"card_no": card_no, "at": datetime.now(UTC)}))


async def test_rows_are_positional_with_constants_and_converted_binds(
    session: AsyncSession,
) -> None:
    await ADD.rows(session, {"card_no": "C1", "day": DAY, "used": 700})
    at = datetime(2026, 11, 23, 4, 5, 6, tzinfo=UTC)
    rows = await USED.rows(session, {"card_no": "C1", "at": at})
    assert [tuple(r) for r in rows] == [(700, "fixed", at)]
    assert await USED.scalar(session, {"card_no": "C1", "at": at}) == 700
    assert await USED.first(session, {"card_no": "none", "at": at}) is None
    # The column type's own conversion runs on every engine: a naive time is refused (SQLAlchemy
    # wraps the error when it runs the statement itself).
    with pytest.raises((ValueError, StatementError), match="naive datetime"):
        await USED.rows(session, {"card_no": "C1", "at": datetime(2026, 11, 23)})


async def test_a_direct_statement_joins_the_session_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        # First statement of the transaction, then rolled back with it.
        await ADD.rows(session, {"card_no": "C2", "day": DAY, "used": 1})
        await session.rollback()
        assert await count(sessions, "C2") == 0
        # After a rollback, and mixed with statements the session runs itself, then committed.
        await ADD.rows(session, {"card_no": "C2", "day": DAY, "used": 2})
        await session.execute(insert(usage).values(card_no="C2", local_date=date(2026, 11, 24)))
        await session.commit()
        assert await count(sessions, "C2") == 2
        # A new transaction after the commit is begun again, not left in autocommit.
        await ADD.rows(session, {"card_no": "C2", "day": date(2026, 11, 25), "used": 3})
        await session.rollback()
    assert await count(sessions, "C2") == 2


async def test_statements_on_their_own_commit_alone_until_a_transaction_begins(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    postgres = engine.dialect.name == "postgresql"
    async with sessions() as session:
        statements_on_their_own(session)
        await ADD.rows(session, {"card_no": "C3", "day": DAY, "used": 1})
        await ADD.rows(session, {"card_no": "C3", "day": date(2026, 11, 24), "used": 2})
        # PostgreSQL: each committed at once, seen by another connection before any commit and
        # kept through a rollback. SQLite: the session's transaction holds them as usual (and
        # its write lock keeps other connections out until it ends).
        if postgres:
            assert await count(sessions, "C3") == 2
        # A statement the session runs itself begins its transaction: the next direct
        # statement joins it and is rolled back with it.
        await session.execute(insert(usage).values(card_no="C3", local_date=date(2026, 11, 25)))
        await ADD.rows(session, {"card_no": "C3", "day": date(2026, 11, 26), "used": 4})
        await session.rollback()
    assert await count(sessions, "C3") == (2 if postgres else 0)


def test_statements_needing_per_execution_work_are_refused() -> None:
    dialect = asyncpg.dialect()  # type: ignore[no-untyped-call]
    expanding = select(usage.c.used).where(usage.c.card_no.in_(bindparam("cards", expanding=True)))
    with pytest.raises(ValueError, match="expanding"):
        _compile(expanding, dialect)
    # ``used`` has a Python-side default that SQLAlchemy would compute at each execution.
    defaulted = insert(usage).values(card_no=bindparam("card_no"), local_date=bindparam("day"))
    with pytest.raises(ValueError, match="Python-side default"):
        _compile(defaulted, dialect)
