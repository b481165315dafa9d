"""Online authorization latency at a fixed request rate (DESIGN §13: p99 ≤ 25 ms at 200/s).

Real parts: PostgreSQL (``CARDSVC_BENCH_DATABASE_URL``, default the local ``test`` server; a fresh
database is created and dropped), Redis (``CARDSVC_BENCH_REDIS_URL``, default the local server),
an ``hsm-sim`` process with the development keys (``hsm_sim.child``: it checks every request's
MAC), and the API under uvicorn in a subprocess on loopback. Many terminals sign in; requests are
sent open-loop on a fixed schedule (``--rate`` HTTP requests per second for ``--seconds``), each
by a terminal that is free (a terminal's sequence numbers must arrive in order, so it has one
request in flight). Latency is measured from the *scheduled* send time, so a stalled server cannot
hide its queueing (no coordinated omission). Mix on random cards of a funded population: 4 in 5
jobs are a purchase (one request), 1 in 5 a pre-authorization followed at once by its completion
(two requests in two slots of the schedule). Every request is timed from its own slot: a
completion that had to wait for its pre-authorization's answer counts the wait. The figures are
printed over all requests and by kind. Terminals sign in over httpx; the timed
requests go through ``_rawhttp.RawConnection`` (one keep-alive socket per terminal), whose CPU
cost is a tenth of httpx's on the two cores the server needs.

The same schedule is first run against ``/healthz`` (an unsigned GET that touches nothing): the
HTTP floor of this machine, reported next to the result as a ratio.

    uv run python bench/online_auth.py [--rate 200] [--seconds 20] [--terminals 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import httpx
from _common import Job, OnlineJobs, Slot, add_active_cards, running_api, scratch
from _rawhttp import RawConnection

from cardsvc.cards.numbers import make_card_no
from cardsvc.db import create_engine, session_factory, unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from terminals.devices.host_client import HostClient, dev_tmk
from terminals.registry import service as registry
from terminals.registry.models import MerchantCategory

MERCHANT = "321100000000800"
WARMUP_SECONDS = 2.0


async def seed(url: str, terminals: list[str], cards: int, funds: int, merchants: int) -> list[str]:
    """``merchants`` shops sharing the terminals; cards whose holders have ``funds`` fen online each."""
    engine = create_engine(url, pool_size=2)
    numbers = [make_card_no("3211", 700_000 + i) for i in range(cards)]
    async with unit_of_work(session_factory(engine)) as session:
        shops = [f"{int(MERCHANT) + m:015d}" for m in range(merchants)]
        for shop in shops:
            await registry.create_merchant(
                session, merchant_no=shop, name=f"Bench Shop {shop[-3:]}", category=MerchantCategory.retail,
                settlement_account="6222000000000800", actor="bench",
            )  # fmt: skip
        for i, t in enumerate(terminals):
            await registry.create_terminal(
                session,
                terminal_no=t,
                psam_no="50" + t + "00",
                merchant_no=shops[i % merchants],
                actor="bench",
            )
        resident_ids = await add_active_cards(session, numbers, expires_on=date(2035, 12, 31))
        await ledger.post(
            session,
            PostingRequest(
                idempotency_key="bench-online-funding",
                tx_type="transfer",
                clearing_date=date.today(),
                entries=[
                    Entry(
                        AccountRef(AccountKind.bank, "BENCH"), Side.debit, funds * len(resident_ids)
                    )
                ]
                + [
                    Entry(AccountRef(AccountKind.resident_account, str(rid)), Side.credit, funds)
                    for rid in resident_ids
                ],
            ),
        )
    await engine.dispose()
    return numbers


_TICK = os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> float:
    """Busy CPU seconds of the whole machine so far (every core, every process)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            after_name = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(after_name[11]) + int(after_name[12])) / _TICK


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in children:
        found.append(int(child))
        found += _descendants(int(child))
    return found


def _backends(database: str) -> list[int]:
    """PostgreSQL backends serving ``database`` (their process title names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"postgres: ") and f" {database} ".encode() in title:
                found.append(int(entry.name))
    return found


def cpu_snapshot(server_pid: int | None, database: str) -> dict[str, float]:
    """CPU seconds so far: the machine, this process (the load), the API process tree, hsm-sim,
    and the PostgreSQL backends of the bench database (a backend that exited is not counted)."""
    me = os.getpid()
    api = {server_pid, *_descendants(server_pid)} if server_pid else set()
    others = [p for p in _descendants(me) if p not in api]
    return {
        "machine": _machine_cpu(),
        "load": _process_cpu(me),
        "api": sum(_process_cpu(p) for p in api if p),
        "hsm": sum(_process_cpu(p) for p in others),
        "pg": sum(_process_cpu(p) for p in _backends(database)),
    }


async def run_schedule(
    clients: list[Slot], rate: float, seconds: float, make_job: Callable[[int], tuple[Job, int]]
) -> tuple[dict[str, list[float]], int]:
    """Open-loop at ``rate`` HTTP requests per second: request k of a job is due k/rate after the
    job's first, which is due when the requests before it are. Each request is timed from its own
    due time, so a completion that waits for its pre-authorization counts that wait. Returns
    (latencies in ms by kind, of the requests due after warm-up; jobs without an answer)."""
    # The generator's own full collections (70+ ms over the seeding's objects) would be timed as
    # the server's latency: freeze what exists now, as the API and hsm-sim do after start-up.
    gc.collect()
    gc.freeze()
    free: asyncio.Queue[Slot] = asyncio.Queue()
    for c in clients:
        free.put_nowait(c)
    latencies: dict[str, list[float]] = {}
    errors = 0
    total = int(rate * (seconds + WARMUP_SECONDS))
    start = time.perf_counter() + 0.2

    async def one(job: Job, due: float) -> None:
        nonlocal errors
        client = await free.get()
        try:
            answers = await job(client)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            answers = None  # a dropped connection or a garbled answer: counted, not timed
        finally:
            free.put_nowait(client)
        if answers is None:
            errors += 1
        elif due - start >= WARMUP_SECONDS:
            for k, (kind, done) in enumerate(answers):
                latencies.setdefault(kind, []).append((done - due - k / rate) * 1000)

    tasks: list[asyncio.Task[None]] = []
    sent = 0
    while sent < total:
        job, requests = make_job(len(tasks))
        due = start + sent / rate
        sent += requests
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(job, due)))
    await asyncio.gather(*tasks)
    return latencies, errors


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def bench(
    base: str,
    terminals: list[str],
    cards: list[str],
    rate: float,
    seconds: float,
    server_pid: int | None = None,
    database: str = "",
) -> None:
    url = httpx.URL(base)
    host, port = str(url.host), int(url.port or 80)

    def connections(hosts: list[HostClient | None]) -> list[Slot]:
        return [Slot(h, RawConnection(host, port)) for h in hosts]

    # The floor: the same schedule, an endpoint that does nothing.
    async def health(slot: Slot) -> list[tuple[str, float]] | None:
        status = (await slot.conn.request("GET", "/healthz", {}))[0]
        return [("healthz", time.perf_counter())] if status == 200 else None

    floor_slots = connections([None] * len(terminals))
    floor, _ = await run_schedule(floor_slots, rate, min(seconds, 10), lambda _i: (health, 1))
    for slot in floor_slots:
        await slot.conn.close()
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        signed = [HostClient(http, t, dev_tmk(t)) for t in terminals]
        for h in signed:
            await h.sign_in()
    slots = connections(list(signed))
    jobs = OnlineJobs(cards, [h.terminal_no for h in signed])

    before = cpu_snapshot(server_pid, database)
    by_kind, errors = await run_schedule(slots, rate, seconds, jobs.make_job)
    after = cpu_snapshot(server_pid, database)
    for slot in slots:
        await slot.conn.close()
    latencies = [ms for values in by_kind.values() for ms in values]
    p50, p99 = statistics.median(latencies), percentile(latencies, 99)
    floor_ms = floor["healthz"]
    f50, f99 = statistics.median(floor_ms), percentile(floor_ms, 99)
    print(
        f"online authorization at {rate:.0f} HTTP requests/s for {seconds:.0f} s ({len(latencies)} answers timed, {errors} without an answer):"
    )
    print(
        f"  latency p50 {p50:.1f} ms, p99 {p99:.1f} ms (target p99 <= 25 ms); "
        f"p99.9 {percentile(latencies, 99.9):.1f} ms, max {max(latencies):.1f} ms"
    )
    print(
        "  by kind: "
        + "; ".join(
            f"{kind} p50 {statistics.median(v):.1f} ms, p99 {percentile(v, 99):.1f} ms ({len(v)})"
            for kind, v in sorted(by_kind.items())
        )
    )
    print(
        f"  HTTP floor (/healthz, same schedule): p50 {f50:.1f} ms, p99 {f99:.1f} ms; ratio p99 {p99 / f99:.1f}x"
    )
    print(f"  response codes: {dict(sorted(jobs.codes.items()))}")
    # Per HTTP request (a completion is a request of its own), over the whole run incl. warm-up.
    sent = jobs.sent
    used = {k: (after[k] - before[k]) * 1000 / sent for k in after}
    rest = used["machine"] - used["load"] - used["api"] - used["hsm"] - used["pg"]
    print(
        f"  CPU per request ({sent} requests): machine {used['machine']:.2f} ms = API {used['api']:.2f}"
        f" + load generator {used['load']:.2f} + hsm-sim {used['hsm']:.2f}"
        f" + PostgreSQL {used['pg']:.2f} + other (Redis, kernel, anything else running) {rest:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--terminals", type=int, default=64)
    parser.add_argument("--cards", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--merchants", type=int, default=16, help="shops the terminals belong to")
    args = parser.parse_args()
    redis_url = os.environ.get("CARDSVC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    with scratch("online") as work:
        terminals = [f"3211800{i:05d}" for i in range(args.terminals)]
        cards = asyncio.run(
            seed(work.database_url, terminals, args.cards, 100_000_000, args.merchants)
        )
        env = dict(
            os.environ, CARDSVC_MODE="development", CARDSVC_DATABASE_URL=work.database_url,
            CARDSVC_HSM_URL=work.hsm_url, CARDSVC_REDIS_URL=redis_url, CARDSVC_LOG_LEVEL="WARNING",
            CARDSVC_VAR_DIR=str(work.workdir / "var"), CARDSVC_DATABASE_POOL_SIZE="10",
            CARDSVC_ONLINE_DAILY_LIMIT_DEFAULT=str(10**12), CARDSVC_ONLINE_DAILY_LIMITS="{}",
        )  # fmt: skip
        with running_api(env, args.workers) as (pid, base):
            asyncio.run(
                bench(base, terminals, cards, args.rate, args.seconds, pid, work.database_name)
            )


if __name__ == "__main__":
    main()
