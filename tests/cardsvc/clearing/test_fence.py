"""The day-cut fence on PostgreSQL with concurrent writers, and the daily partitions."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from sqlalchemy import text

from cardsvc.clearing import partitions
from cardsvc.clearing import service as clearing
from cardsvc.clearing.models import DayStatus
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.resources import Resources
from tests.cardsvc.clearing.helpers import status_of

pytestmark = pytest.mark.postgres

CASH = AccountRef(AccountKind.counter_cash, "FENCE")


def _load(key: str, day: date, card: int) -> PostingRequest:
    return PostingRequest(
        idempotency_key=key,
        tx_type="load",
        clearing_date=day,
        entries=[
            Entry(CASH, Side.debit, 100),
            Entry(AccountRef(AccountKind.card_float, f"32110000{card:08d}"), Side.credit, 100),
        ],
    )


@dataclass
class Written:
    key: str
    day: date
    committed_at: float  # time.monotonic() after the commit


async def _writer(
    resources: Resources, number: int, stop: asyncio.Event, out: list[Written]
) -> None:
    """Units of work of two postings each, the clearing date asked before each (as two services
    of one request would), with a pause between them: a unit in flight at the cut."""
    n = 0
    while not stop.is_set():
        key = f"fence:{number}:{n}"
        async with unit_of_work(resources.sessions) as session:
            day = await clearing.clearing_date(session, resources.settings)
            await ledger.post(session, _load(f"{key}:a", day, number))
            await asyncio.sleep(random.uniform(0, 0.02))
            again = await clearing.clearing_date(session, resources.settings)
            await ledger.post(session, _load(f"{key}:b", again, number))
        out.append(Written(key, day, time.monotonic()))
        n += 1


async def test_writers_in_flight_land_wholly_on_one_day(resources: Resources) -> None:
    async with unit_of_work(resources.sessions) as session:
        day = await clearing.clearing_date(session, resources.settings)
    # As in production, the partitions were made days ahead.
    await partitions.ensure_days(resources.sessions, day, day + timedelta(days=8))
    written: list[Written] = []
    stop = asyncio.Event()
    writers = [asyncio.create_task(_writer(resources, i, stop, written)) for i in range(6)]

    slow_started = asyncio.Event()

    async def slow() -> Written:
        # Takes D, then stays in flight well into the cut's wait.
        async with unit_of_work(resources.sessions) as session:
            taken = await clearing.clearing_date(session, resources.settings)
            slow_started.set()
            await asyncio.sleep(1.0)
            await ledger.post(session, _load("fence:slow", taken, 99))
        return Written("fence:slow", taken, time.monotonic())

    slow_task = asyncio.create_task(slow())
    await slow_started.wait()
    await asyncio.sleep(0.1)
    cut_started = time.monotonic()
    cut = asyncio.create_task(clearing.close_day(resources.sessions, resources.settings, day))
    await asyncio.sleep(0.3)
    # The cut is waiting for the slow writer: the day is closing, new work takes D+1.
    assert not cut.done()
    assert await status_of(resources, day) is DayStatus.closing
    assert await cut == day + timedelta(days=1)
    closed_at = time.monotonic()
    slow_written = await slow_task
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*writers)

    assert slow_written.day == day
    assert slow_written.committed_at < closed_at
    assert closed_at - cut_started >= 0.5
    on_day = [w for w in written if w.day == day]
    after = [w for w in written if w.day == day + timedelta(days=1)]
    assert on_day
    assert after
    assert {w.day for w in written} == {day, day + timedelta(days=1)}
    # Nothing was written onto D once it was closed...
    assert all(w.committed_at < closed_at for w in on_day)
    # ...and acceptances went on (onto D+1) while the cut waited.
    assert any(w.committed_at < closed_at for w in after)
    async with resources.sessions() as session:
        split = (
            await session.execute(
                text(
                    "SELECT split_part(k.idempotency_key, ':', 3), count(DISTINCT k.clearing_date) "
                    "FROM ledger_transaction_keys AS k WHERE k.idempotency_key LIKE 'fence:%' "
                    "GROUP BY split_part(k.idempotency_key, ':', 2), "
                    "split_part(k.idempotency_key, ':', 3) HAVING count(DISTINCT k.clearing_date) > 1"
                )
            )
        ).all()
        assert split == []
        report = await ledger.check_invariants(session)
    assert report.ok, report.render()


async def test_a_transaction_left_open_blocks_the_cut_loudly(resources: Resources) -> None:
    settings = resources.settings.model_copy(update={"day_cut_wait_seconds": 0.3})
    async with unit_of_work(resources.sessions) as session:
        day = await clearing.clearing_date(session, settings)
    async with resources.sessions() as stuck:
        await stuck.execute(text("SELECT 1"))  # a transaction open, never finished
        with pytest.raises(clearing.DayCutBlocked, match="open since"):
            await clearing.close_day(resources.sessions, settings, day)
        assert await status_of(resources, day) is DayStatus.closing
        async with unit_of_work(resources.sessions) as session:
            assert await clearing.clearing_date(session, settings) == day + timedelta(days=1)
        await stuck.rollback()
    # The next attempt resumes at the wait and closes the day.
    result = await clearing.cut_due(resources.sessions, settings)
    assert day in result.closed
    assert await status_of(resources, day) is DayStatus.closed


async def _partition_of(resources: Resources, table: str, where: str) -> set[str]:
    async with resources.sessions() as session:
        rows = await session.execute(
            text(f"SELECT DISTINCT tableoid::regclass::text FROM {table} WHERE {where}")  # noqa: S608
        )
        return {name for (name,) in rows}


async def test_each_day_in_its_own_partition(resources: Resources) -> None:
    day = date(2031, 5, 6)
    made = await partitions.ensure_days(resources.sessions, day, day + timedelta(days=1))
    assert set(made) == {
        partitions.partition_name(table, d)
        for table in partitions.PARTITIONED_TABLES
        for d in (day, day + timedelta(days=1))
    }
    assert await partitions.ensure_days(resources.sessions, day, day) == []
    async with unit_of_work(resources.sessions) as session:
        await ledger.post(session, _load("part:in", day, 1))
        # A day with no partition yet goes to the default partition, never fails.
        await ledger.post(session, _load("part:default", day + timedelta(days=3), 1))
    assert await _partition_of(resources, "ledger_lines", f"clearing_date = '{day}'") == {
        "ledger_lines_20310506"
    }
    late = day + timedelta(days=3)
    for table in ("ledger_transactions", "ledger_lines"):
        assert await _partition_of(resources, table, f"clearing_date = '{late}'") == {
            f"{table}_default"
        }
    # Its partition made later, the day's rows move into it.
    await partitions.ensure_days(resources.sessions, late, late)
    for table in ("ledger_transactions", "ledger_lines"):
        assert await _partition_of(resources, table, f"clearing_date = '{late}'") == {
            partitions.partition_name(table, late)
        }
    async with resources.sessions() as session:
        replay = await ledger.post(session, _load("part:default", late, 1))
        assert replay.replayed
        report = await ledger.check_invariants(session)
    assert report.ok, report.render()


async def test_the_cut_makes_partitions_ahead(resources: Resources) -> None:
    async with unit_of_work(resources.sessions) as session:
        day = await clearing.clearing_date(session, resources.settings)
    await clearing.close_day(resources.sessions, resources.settings, day)
    async with resources.sessions() as session:
        have = await partitions.existing(session, "offline_records")
    ahead = resources.settings.partitions_ahead_days
    for n in range(1, ahead + 2):
        assert partitions.partition_name("offline_records", day + timedelta(days=n)) in have
