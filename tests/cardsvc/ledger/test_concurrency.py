"""Concurrent writers on PostgreSQL: row locks in id order, no deadlock, retries applied once."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc.ledger import service as ledger
from cardsvc.ledger.errors import IdempotencyConflict
from cardsvc.ledger.schemas import PostingRequest
from tests.cardsvc.ledger.helpers import DAY, card, cr, dr, load, merchant, purchase_batch

# Row locks and real concurrency: no SQLite variant (tests/conftest.py deselects it).
pytestmark = pytest.mark.postgres


async def test_many_writers_on_overlapping_accounts(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    cards = [card(i) for i in range(6)]
    hot = merchant(1)
    async with sessions() as session:
        for i, ref in enumerate(cards):
            await ledger.post(session, load(f"fund:{i}", ref, 1_000_000))
        await session.commit()

    expected: dict[str, int] = {ref.owner_ref: 1_000_000 for ref in cards}
    expected[hot.owner_ref] = 0

    async def writer(w: int) -> None:
        rng = random.Random(w)
        for n in range(25):
            picks = rng.sample(cards, k=rng.randint(2, 4))
            rng.shuffle(picks)  # entries in random order: the lock order must not depend on it
            items = [(ref, rng.randint(1, 50)) for ref in picks]
            request = purchase_batch(f"w{w}:{n}", items, hot)
            if n % 5 == 0:  # sometimes a card-to-card transfer that touches no hot row
                a, b = picks[0], picks[1]
                request = PostingRequest(f"w{w}:{n}", "transfer", DAY, [dr(a, 7), cr(b, 7)])
                items = [(a, 7), (b, -7)]
            async with sessions() as session:
                await ledger.post(session, request)
                await session.commit()
            for ref, amount in items:
                expected[ref.owner_ref] -= amount
                if request.tx_type == "purchase_batch":
                    expected[hot.owner_ref] += amount

    await asyncio.wait_for(asyncio.gather(*(writer(w) for w in range(8))), timeout=120)
    async with sessions() as session:
        for ref in [*cards, hot]:
            assert await ledger.balance(session, ref) == expected[ref.owner_ref]
        report = await ledger.check_invariants(session)
        assert report.ok, report.render()
        assert report.transactions == len(cards) + 8 * 25


async def test_concurrent_duplicate_gets_the_original(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await ledger.post(session, load("fund", card(1), 1000))
        await session.commit()
    request = purchase_batch("upload:T1:1", [(card(1), 600)], merchant(1))

    first = sessions()
    original = await ledger.post(first, request)  # holds the row locks, not committed
    second = sessions()
    racing = asyncio.create_task(ledger.post(second, request))
    await asyncio.sleep(0.3)
    assert not racing.done()  # queued behind the first one's locks
    await first.commit()
    replay = await asyncio.wait_for(racing, 10)
    await second.commit()
    await first.close()
    await second.close()
    # had the duplicate been applied the card would be short (1000 - 2 * 600 < 0)
    assert replay.replayed
    assert replay.id == original.id
    async with sessions() as session:
        assert await ledger.balance(session, card(1)) == 400
        assert (await ledger.check_invariants(session)).ok


async def test_concurrent_duplicate_after_rollback_is_posted(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await ledger.post(session, load("fund", card(1), 1000))
        await session.commit()
    request = purchase_batch("upload:T1:2", [(card(1), 600)], merchant(1))
    first = sessions()
    await ledger.post(first, request)
    second = sessions()
    racing = asyncio.create_task(ledger.post(second, request))
    await asyncio.sleep(0.3)
    await first.rollback()
    posted = await asyncio.wait_for(racing, 10)
    await second.commit()
    await first.close()
    await second.close()
    assert not posted.replayed
    async with sessions() as session:
        assert await ledger.balance(session, card(1)) == 400


async def test_concurrent_same_key_other_accounts_conflicts(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        await ledger.post(session, load("fund1", card(1), 1000))
        await ledger.post(session, load("fund2", card(2), 1000))
        await session.commit()
    first = sessions()
    await ledger.post(first, purchase_batch("dup", [(card(1), 100)], merchant(1)))
    second = sessions()
    # disjoint accounts: no row lock in common, the key's unique index makes it wait
    racing = asyncio.create_task(
        ledger.post(second, purchase_batch("dup", [(card(2), 100)], merchant(2)))
    )
    await asyncio.sleep(0.3)
    assert not racing.done()
    await first.commit()
    with pytest.raises(IdempotencyConflict):
        await asyncio.wait_for(racing, 10)
    await second.rollback()
    await first.close()
    await second.close()
    async with sessions() as session:
        assert await ledger.balance(session, card(2)) == 1000
        assert (await ledger.check_invariants(session)).ok
