"""The nightly settlement of a big day on PostgreSQL (DESIGN §13; figures, never a test).

    flock /tmp/bench.lock uv run python bench/settlement_day.py [--records 1000000]
        [--merchants 2000] [--runs 3]

A scratch database of its own (``CARDSVC_BENCH_DATABASE_URL``, default the local ``test``
server) and an hsm-sim process. For each run, a fresh clearing day is seeded in a child process
(so its memory is not the run's): ``--records`` offline records spread evenly over
``--merchants`` merchants, one terminal each, uploads of at most 1,000 records (1 in 100 refused
with a bad TAC), written with COPY, and the day's offline batch postings (one ledger
transaction, every merchant's pending account credited); every merchant has bank details and a
daily cycle, and one fee rule (0.6 per mille, at least 1 fen a record) applies to all. Then ``cardsvc settlement run`` of that
day, in this process, as the command runs it: every step (close, re-examine, clear, fees,
batches, postings, files with the bank file and the issue of every payout, report), the HSM's
manifest MAC and the files on disk, then ``cardsvc settlement verify`` of them (not timed).

Prints each step's seconds and rows/s, the run's seconds and records/s, the peak RSS of this
process (the run only), the median over the runs, the target (≤ 60 s for 1,000,000 records) and
two ratios: to the target, and to a raw ``GROUP BY merchant`` sum of the same day's partition
measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
from _common import Scratch, scratch
from sqlalchemy import insert, make_url, select

from cardsvc.clearing import partitions
from cardsvc.clearing.models import ClearingDay, DayStatus
from cardsvc.db import create_engine, session_factory
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.resources import open_resources
from cardsvc.settings import Mode, Settings
from settlement.fees.models import FeeRule
from settlement.nightly import service
from settlement.nightly.models import STEPS, Step
from settlement.payouts.models import Cycle, SettlementPayee
from terminals.registry.models import (
    Merchant,
    MerchantCategory,
    MerchantStatus,
    Terminal,
    TerminalKind,
    TerminalStatus,
)
from terminals.uploads.models import UploadBatch

FIRST_DAY = date(2026, 3, 2)
TARGET_SECONDS = 60.0
TARGET_RECORDS = 1_000_000
BATCH_MAX = 1000
REFUSED_EVERY = 100  # one record in this many is refused (01, TAC invalid)
COUNTER = AccountRef(AccountKind.counter_cash, "BENCH")
RECORD_COLUMNS = (
    "batch_id", "position", "result_code", "merchant_id", "uploading_terminal_id", "asn",
    "card_type", "tx_type", "offline_counter", "balance_before", "amount", "fare", "terminal_no",
    "psam_no", "terminal_serial", "tx_datetime", "tx_time", "key_version", "tac", "gray",
    "blacklisted", "clearing_date", "received_at",
)  # fmt: skip


def merchant_no(m: int) -> str:
    return f"3211{m:011d}"


def terminal_no(m: int) -> str:
    return f"3211{m:08d}"


def amount_of(i: int) -> int:
    return 100 + (i * 7919) % 900


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# --- seeding (in a child process) -----------------------------------------------------------


async def _seed_registry(url: str, merchants: int) -> None:
    engine = create_engine(url, pool_size=2)
    now = datetime.now(UTC)
    try:
        async with session_factory(engine)() as session:
            await session.execute(
                insert(Merchant),
                [
                    {"merchant_no": merchant_no(m), "name": f"Bench merchant {m}",
                     "category": MerchantCategory.bus, "settlement_account": f"6217{m:012d}",
                     "status": MerchantStatus.active, "created_at": now}
                    for m in range(merchants)
                ],
            )  # fmt: skip
            ids = dict((await session.execute(select(Merchant.merchant_no, Merchant.id))).all())
            await session.execute(
                insert(Terminal),
                [
                    {"terminal_no": terminal_no(m), "psam_no": f"PSAM{m:016d}",
                     "merchant_id": ids[merchant_no(m)], "kind": TerminalKind.validator,
                     "status": TerminalStatus.active, "description": "bench",
                     "blacklist_version": 0, "params_version": 0, "created_at": now}
                    for m in range(merchants)
                ],
            )  # fmt: skip
            session.add(ClearingDay(clearing_date=FIRST_DAY, status=DayStatus.open, opened_at=now))
            # Every merchant paid daily to its bank account (so the bank file has a line each and
            # every payout is issued), and one fee rule for all: 0.6 per mille of each record,
            # at least 1 fen.
            await session.execute(
                insert(SettlementPayee),
                [
                    {"merchant_no": merchant_no(m), "cycle": Cycle.daily, "cycle_day": None,
                     "bank_name": "Bench Bank", "bank_branch": "Main", "account_no": f"6222{m:012d}",
                     "account_holder": f"Bench merchant {m}", "updated_by": "bench",
                     "updated_at": now}
                    for m in range(merchants)
                ],
            )  # fmt: skip
            session.add(
                FeeRule(
                    merchant_no=None, category=None, tx_class=None, effective_from=FIRST_DAY,
                    effective_to=None, per_record=0, rate=60, daily=0, min_fee=1, max_fee=None,
                    note="bench", created_by="bench", created_at=now,
                )
            )  # fmt: skip
            await session.commit()
    finally:
        await engine.dispose()


async def _seed_day(url: str, day: date, records: int, merchants: int) -> None:
    """One day of uploads: the batches, their records by COPY, and the batch postings."""
    engine = create_engine(url, pool_size=2)
    sessions = session_factory(engine)
    per_merchant = records // merchants
    now = datetime.now(UTC)
    try:
        await partitions.ensure_days(sessions, day, day + timedelta(days=2))
        async with sessions() as session:
            merchant_ids = dict(
                (await session.execute(select(Merchant.merchant_no, Merchant.id))).all()
            )
            terminal_ids = dict(
                (await session.execute(select(Terminal.terminal_no, Terminal.id))).all()
            )
            batches: list[dict[str, object]] = []
            credits: dict[int, int] = {}
            for m in range(merchants):
                for start in range(0, per_merchant, BATCH_MAX):
                    size = min(BATCH_MAX, per_merchant - start)
                    amounts = [amount_of(m * per_merchant + start + p) for p in range(size)]
                    refused = [a for p, a in enumerate(amounts) if _refused(start + p)]
                    accepted = sum(amounts) - sum(refused)
                    credits[m] = credits.get(m, 0) + accepted
                    batches.append(
                        {"terminal_id": terminal_ids[terminal_no(m)],
                         "merchant_id": merchant_ids[merchant_no(m)],
                         "batch_no": (day - FIRST_DAY).days * 10_000 + start // BATCH_MAX + 1,
                         "content_hash": hashlib.sha256(f"{day}:{m}:{start}".encode()).hexdigest(),
                         "record_count": size, "total_amount": sum(amounts),
                         "accepted_count": size - len(refused), "accepted_amount": accepted,
                         "refused_count": len(refused), "refused_amount": sum(refused),
                         "clearing_date": day, "blacklist_version": 0, "params_version": 0,
                         "response": {}, "received_at": now}
                    )  # fmt: skip
            await session.execute(insert(UploadBatch), batches)
            rows = await session.execute(
                select(
                    UploadBatch.id, UploadBatch.terminal_id, UploadBatch.merchant_id,
                    UploadBatch.batch_no,
                ).where(UploadBatch.clearing_date == day)
            )  # fmt: skip
            batch_ids = {(int(t), int(b)): (int(i), int(mid)) for i, t, mid, b in rows.all()}
            entries = [Entry(COUNTER, Side.debit, sum(credits.values()))]
            entries += [
                Entry(AccountRef(AccountKind.merchant_pending, merchant_no(m)), Side.credit, c)
                for m, c in sorted(credits.items())
                if c > 0
            ]
            await ledger.post(
                session,
                PostingRequest(f"bench-uploads:{day}", "purchase_batch", day, entries),
            )
            await session.commit()
    finally:
        await engine.dispose()

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.copy_records_to_table(
            "offline_records",
            records=_records(day, per_merchant, merchants, terminal_ids, batch_ids, now),
            columns=RECORD_COLUMNS,
        )
        await conn.execute("ANALYZE offline_records")
    finally:
        await conn.close()


def _refused(position: int) -> bool:
    return position % REFUSED_EVERY == REFUSED_EVERY - 1


def _records(
    day: date,
    per_merchant: int,
    merchants: int,
    terminal_ids: dict[str, int],
    batch_ids: dict[tuple[int, int], tuple[int, int]],
    now: datetime,
) -> Iterator[tuple[object, ...]]:
    stamp = day.strftime("%Y%m%d") + "083000"
    moment = datetime(day.year, day.month, day.day, 0, 30, tzinfo=UTC)
    for m in range(merchants):
        term_id = terminal_ids[terminal_no(m)]
        for n in range(per_merchant):
            batch_no = (day - FIRST_DAY).days * 10_000 + n // BATCH_MAX + 1
            batch_id, merchant_id = batch_ids[(term_id, batch_no)]
            i = m * per_merchant + n
            card = f"3211{(i % 500_000):011d}0"
            yield (
                batch_id, n % BATCH_MAX, "01" if _refused(n) else "00", merchant_id, term_id,
                card, "01", 6, i // 500_000 + 1, 100_000, amount_of(i), amount_of(i),
                terminal_no(m), f"PSAM{m:016d}", n + 1, stamp, moment, 1, "00000000", False,
                False, day, now,
            )  # fmt: skip


def seed(url: str, day: date, records: int, merchants: int, registry: bool) -> None:
    async def go() -> None:
        if registry:
            await _seed_registry(url, merchants)
        await _seed_day(url, day, records, merchants)

    asyncio.run(go())


def seed_in_child(url: str, day: date, records: int, merchants: int, registry: bool) -> float:
    started = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(
        target=seed, args=(url, day, records, merchants, registry)
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"seeding failed (exit {child.exitcode})")
    return time.perf_counter() - started


# --- the run --------------------------------------------------------------------------------


async def raw_group_by(url: str, day: date) -> float:
    """The floor: one GROUP BY merchant sum over the day's partition, fetched."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        started = time.perf_counter()
        await conn.fetch(
            "SELECT merchant_id, count(*), sum(amount) FROM offline_records "
            "WHERE clearing_date = $1 AND result_code IN ('00', '10') GROUP BY merchant_id",
            day,
        )
        return time.perf_counter() - started
    finally:
        await conn.close()


async def settle(box: Scratch, day: date) -> tuple[float, service.RunResult]:
    settings = Settings(
        mode=Mode.development, database_url=box.database_url, hsm_url=box.hsm_url,
        var_dir=box.workdir / "var", log_level="WARNING", redis_url=None,
    )  # fmt: skip
    async with open_resources(settings) as res:
        started = time.perf_counter()
        result = await service.run(res.sessions, res.settings, day, hsm=res.hsm)
        seconds = time.perf_counter() - started
        checked = await service.verify_files(res.settings, res.hsm, day)
        if not checked.ok:
            raise SystemExit(f"files do not verify: {checked.problems()[:5]}")
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=TARGET_RECORDS)
    parser.add_argument("--merchants", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of the first run to this file")
    args = parser.parse_args()
    if args.records < args.merchants:
        parser.error("--records must be at least --merchants")
    from cardsvc.logging import configure_logging

    configure_logging("WARNING", json=False)
    totals: list[float] = []
    floors: list[float] = []
    with scratch("settlement_day") as box:
        print(
            f"settlement of a day on PostgreSQL: {args.records:,} records over "
            f"{args.merchants:,} merchants, {args.runs} run(s)"
        )
        for run in range(args.runs):
            day = FIRST_DAY + timedelta(days=run)
            seeded = seed_in_child(
                box.database_url, day, args.records, args.merchants, registry=run == 0
            )
            floor = asyncio.run(raw_group_by(box.database_url, day))
            if args.profile and run == 0:
                import cProfile

                profiler = cProfile.Profile()
                seconds, result = profiler.runcall(asyncio.run, settle(box, day))
                profiler.dump_stats(args.profile)
            else:
                seconds, result = asyncio.run(settle(box, day))
            totals.append(seconds)
            floors.append(floor)
            print(f"run {run + 1} ({day}): seeded in {seeded:.1f} s")
            for step in result.steps:
                rate = f"{step.rows / step.seconds:12,.0f} rows/s" if step.seconds > 0 else ""
                print(
                    f"  {STEPS.index(step.step) + 1}/{len(STEPS)} {step.step.value:<9} "
                    f"{step.seconds:7.2f} s {step.rows:>9,} row(s) {rate}"
                )
            print(f"  files: {result.steps[STEPS.index(Step.files)].detail}")
            print(
                f"  total     {seconds:7.2f} s  {args.records / seconds:,.0f} records/s; raw "
                f"GROUP BY merchant {floor:.3f} s (ratio {seconds / floor:,.0f}x)"
            )
            shutil.rmtree(box.workdir / "var" / "settlement" / day.isoformat(), ignore_errors=True)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    median = statistics.median(totals)
    floor = statistics.median(floors)
    print(f"median of {len(totals)} run(s): {median:.2f} s for {args.records:,} records")
    print(f"  peak RSS of the settling process: {peak_mib:.0f} MiB")
    print(f"  raw GROUP BY merchant median {floor:.3f} s: the run takes {median / floor:,.0f}x")
    if args.records == TARGET_RECORDS:
        print(
            f"  target ≤ {TARGET_SECONDS:.0f} s for {TARGET_RECORDS:,} records: "
            f"{median / TARGET_SECONDS:.2f} of the target"
        )
        print("OK" if median <= TARGET_SECONDS else "OVER TARGET")
    else:
        print(f"  (a quick run: the target, ≤ {TARGET_SECONDS:.0f} s, is for {TARGET_RECORDS:,})")
    sys.exit(0)


if __name__ == "__main__":
    main()
