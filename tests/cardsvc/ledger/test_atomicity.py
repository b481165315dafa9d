"""A posting is one database transaction: a failure part-way leaves nothing behind."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cardsvc.ledger import repository as repo
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import LedgerLine, LedgerTransaction
from tests.cardsvc.ledger.helpers import card, load, merchant, purchase_batch


class CrashMidPosting(Exception):
    pass


async def test_failure_between_lines_and_balances_leaves_nothing(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with sessions() as session:
        await ledger.post(session, load("l1", card(1), 1000))
        await session.commit()

    seen: list[str] = []

    # The real driver path, interrupted right after the statement that wrote the lines of one
    # posting (on SQLite before the balance update; on PostgreSQL the same statement moved the
    # balances too): the transaction row and its lines have reached the database by then.
    on_postgres = engine.dialect.name == "postgresql"
    name = "write_transaction" if on_postgres else "insert_lines"
    real = getattr(repo, name)

    async def then_crash(*args: Any, **kwargs: Any) -> None:
        await real(*args, **kwargs)
        seen.append("lines")
        raise CrashMidPosting

    monkeypatch.setattr(repo, name, then_crash)
    async with sessions() as session:
        with pytest.raises(CrashMidPosting):
            await ledger.post(session, purchase_batch("u1", [(card(1), 400)], merchant(1)))
        await session.rollback()
    monkeypatch.setattr(repo, name, real)
    assert seen == ["lines"]

    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(LedgerTransaction)) == 1
        assert await session.scalar(select(func.count()).select_from(LedgerLine)) == 2
        assert await ledger.balance(session, card(1)) == 1000
        assert await ledger.balance(session, merchant(1)) == 0
        assert (await ledger.check_invariants(session)).ok
        # and the same posting, retried, goes through once
        done = await ledger.post(session, purchase_batch("u1", [(card(1), 400)], merchant(1)))
        await session.commit()
        assert not done.replayed
        assert await ledger.balance(session, card(1)) == 600
