"""Ledger posting throughput on PostgreSQL (DESIGN §13; figures are medians, never a test).

    uv run python bench/ledger.py [--url postgresql+asyncpg://postgres@127.0.0.1:5432/test]

Creates a scratch database next to the given one, migrates it, and measures:
  single   postings/s of 2-entry transactions, one writer, one commit each;
  batch    500 card-float debits + 1 aggregated operator credit per transaction (records/s);
  hot      8 concurrent writers, every posting credits the same operator account.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import date

from _common import create_database, drop_database
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import migrate
from cardsvc.db import create_engine, session_factory
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest

DAY = date(2026, 11, 23)
COUNTER = AccountRef(AccountKind.counter_cash, "BENCH")
HOT = AccountRef(AccountKind.merchant_pending, "000000000000001")


def card(n: int) -> AccountRef:
    return AccountRef(AccountKind.card_float, f"3211{n:012d}")


async def _fund(sessions: async_sessionmaker[AsyncSession], cards: int) -> None:
    # one funding transaction per 500 cards: accounts created in bulk by post()
    for start in range(0, cards, 500):
        refs = [card(i) for i in range(start, min(start + 500, cards))]
        entries = [Entry(ref, Side.credit, 10_000_000) for ref in refs]
        entries.append(Entry(COUNTER, Side.debit, 10_000_000 * len(refs)))
        async with sessions() as session:
            await ledger.post(session, PostingRequest(f"fund:{start}", "load", DAY, entries))
            await session.commit()


async def single(sessions: async_sessionmaker[AsyncSession], run: str, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        request = PostingRequest(
            f"{run}:s:{i}",
            "purchase",
            DAY,
            [Entry(card(i % 5000), Side.debit, 1), Entry(HOT, Side.credit, 1)],
        )
        async with sessions() as session:
            await ledger.post(session, request)
            await session.commit()
    return n / (time.perf_counter() - started)


async def batch(
    sessions: async_sessionmaker[AsyncSession], run: str, batches: int, size: int = 500
) -> float:
    started = time.perf_counter()
    for b in range(batches):
        base = (b * size) % 5000
        entries = [Entry(card(base + i), Side.debit, 3) for i in range(size)]
        entries.append(Entry(HOT, Side.credit, 3 * size))
        async with sessions() as session:
            await ledger.post(
                session, PostingRequest(f"{run}:b:{b}", "purchase_batch", DAY, entries)
            )
            await session.commit()
    return batches * size / (time.perf_counter() - started)


async def hot(
    sessions: async_sessionmaker[AsyncSession], run: str, writers: int, each: int
) -> float:
    async def writer(w: int) -> None:
        for i in range(each):
            request = PostingRequest(
                f"{run}:h:{w}:{i}",
                "purchase",
                DAY,
                [Entry(card(w * 100 + i % 100), Side.debit, 1), Entry(HOT, Side.credit, 1)],
            )
            async with sessions() as session:
                await ledger.post(session, request)
                await session.commit()

    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return writers * each / (time.perf_counter() - started)


async def main(url: str, rounds: int) -> None:
    name = f"cardsvc_bench_{uuid.uuid4().hex[:8]}"
    bench_url = await create_database(url, name)
    try:
        await asyncio.to_thread(migrate.upgrade, bench_url)
        engine = create_engine(bench_url, pool_size=10)
        sessions = session_factory(engine)
        await _fund(sessions, 5000)
        figures: dict[str, list[float]] = {"single": [], "batch": [], "hot": []}
        for r in range(rounds):
            figures["single"].append(await single(sessions, f"r{r}", 300))
            figures["batch"].append(await batch(sessions, f"r{r}", 20))
            figures["hot"].append(await hot(sessions, f"r{r}", 8, 60))
        async with sessions() as session:
            report = await ledger.check_invariants(session)
        await engine.dispose()
        med = {k: statistics.median(v) for k, v in figures.items()}
        verdict = "OK" if report.ok else "FAILED"
        print(f"ledger bench on PostgreSQL, {rounds} rounds (medians):")
        print(f"  single 2-entry postings, 1 writer:       {med['single']:8.0f} postings/s")
        print(f"  batched 500 debits + 1 credit, 1 writer: {med['batch']:8.0f} records/s")
        print(f"  8 writers, one hot operator account:     {med['hot']:8.0f} postings/s")
        print(f"  invariants after the run: {verdict} ({report.transactions} transactions)")
    finally:
        await drop_database(url, name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.rounds))
