"""Utility bill payments end to end against the biller simulator (PostgreSQL + Redis on loopback).

A real API (uvicorn, ``--workers``), a real ``cardsvc worker --job bill-outbox`` process, an
hsm-sim process and a biller-sim process answering after ``--latency-ms`` (5 ms). A counter
operator asks what is due on a bill key (``POST /bills/query``: the API asks the biller) and pays
it in cash (``POST /bills/payments/counter``: held and committed, answered ``pending``); the
worker sends it to the biller after commit and records the answer. Payments are offered open
loop at ``--rate`` per second for ``--seconds``.

It prints the payments that were paid and their rate (first submission to last decision), the
latency of a payment from its submission to its decision by the worker (p50, p99, p99.9: the
decision time is the row's ``decided_at``), the query's and the submission's HTTP latencies, the
ratio of the paid rate to the simulator's own rate of query + payment measured in the same run
(signed by the same HSM, as many at once as the load had at most in flight), and the CPU per
paid payment of each process (API, worker, hsm-sim, biller-sim, PostgreSQL backends, the load).

    flock -x /tmp/quiet.lock uv run python bench/bills.py [--rate 200] [--seconds 20]

Target (README, the bench table): at least 200 payments/s, p99 at most 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from _common import running_api, scratch
from _rawhttp import RawConnection
from online_auth import _backends, _descendants, _machine_cpu, _process_cpu
from sqlalchemy import select

from cardsvc.bills import service as bills
from cardsvc.bills.adapter import BillerClient, BillerEndpoint
from cardsvc.bills.models import BillPayment, PaymentStatus
from cardsvc.bills.schemas import BankDetails, BillerIn
from cardsvc.db import create_engine, session_factory, unit_of_work
from cardsvc.hsm.connect import open_hsm
from cardsvc.settings import Settings
from cardsvc.staff import service as staff
from cardsvc.staff.auth import Role
from terminals.devices.billersim.child import start_biller_process

BILLER = "WATER01"
KEY = bytes(range(32))
LABEL = "BILLER_WATER01"
CHANNEL = "CITYCARD"
PASSWORD = "bench horse battery staple"  # noqa: S105 - a scratch database's operator
CHANNEL_USED = (
    "counter (staff bearer token: POST /api/v1/bills/query, then POST /api/v1/bills/payments/counter"
    " in cash; the bill-outbox worker pays the biller)"
)
SIM_KEYS = 2000  # bill keys the simulator's own rate is measured on (its own, not the load's)


def data_set(accounts: int, latency_ms: int) -> dict[str, Any]:
    """One water biller; every account has one bill of 128.50 yuan (a payment each)."""
    return {
        "channel": CHANNEL,
        "billers": [
            {
                "id": BILLER, "key": KEY.hex(), "latency_ms": latency_ms,
                "accounts": [
                    {"bill_key": f"31{n:08d}", "holder": "张三",
                     "bills": [{"bill_id": f"B-{n}", "period": "202611", "amount": 12_500,
                                "late_fee": 350, "due_date": "2026-12-15"}]}
                    for n in range(accounts)
                ],
            }
        ],
    }  # fmt: skip


def settings_for(database_url: str, hsm_url: str, var_dir: Path) -> Settings:
    return Settings(mode="development", database_url=database_url, hsm_url=hsm_url, var_dir=var_dir)


async def seed(settings: Settings, sim_url: str) -> None:
    """The biller's key in the HSM, the biller, a counter operator."""
    async with open_hsm(settings) as hsm:
        await hsm.key_import(LABEL, "biller-mac", KEY, "HMAC-SHA256")
    engine = create_engine(settings.database_url, pool_size=2)
    try:
        sessions = session_factory(engine)
        async with unit_of_work(sessions) as session:
            body = BillerIn(
                code=BILLER, name="城市水务", category="water", endpoint=sim_url,
                key_label=LABEL, bill_key_pattern="31[0-9]{8}",
                bank=BankDetails(bank_name="城市银行", account_no="6222000011112222",
                                 account_name="城市水务"),
            )  # fmt: skip
            await bills.create_biller(session, body, actor="bench")
            await staff.create_staff(
                session,
                username="desk",
                password=PASSWORD,
                roles=[Role.counter_operator],
                actor="bench",
            )
    finally:
        await engine.dispose()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def offer(
    rate: float, seconds: float, job: Callable[[int], Awaitable[None]]
) -> tuple[int, int]:
    """Start job n at n / rate seconds (open loop); (jobs started, most in flight at once)."""
    started = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    in_flight = peak = 0

    async def run(n: int) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await job(n)
        finally:
            in_flight -= 1

    n = 0
    while (due := n / rate) < seconds:
        delay = started + due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(run(n)))
        n += 1
    await asyncio.gather(*tasks, return_exceptions=True)
    return n, peak


class Load:
    """The counter's requests over a pool of keep-alive raw connections (one request at a time
    on each, as a counter's client sends them): httpx's own CPU per request would be most of
    what the bench measures on this machine."""

    def __init__(self, host: str, port: int, token: str, connections: int) -> None:
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.free: asyncio.Queue[RawConnection] = asyncio.Queue()
        for _ in range(connections):
            self.free.put_nowait(RawConnection(host, port))
        self.submitted: dict[str, float] = {}  # serial -> wall time of its submission
        self.query_ms: list[float] = []
        self.submit_ms: list[float] = []
        self.refused: dict[str, int] = {}

    def _refused(self, what: str) -> None:
        self.refused[what] = self.refused.get(what, 0) + 1

    async def post(self, target: str, payload: dict[str, Any]) -> tuple[int, Any]:
        conn = await self.free.get()
        try:
            body = json.dumps(payload, separators=(",", ":")).encode()
            return await conn.request("POST", target, self.headers, body)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            await conn.close()  # a broken connection is opened again by its next request
            raise
        finally:
            self.free.put_nowait(conn)

    async def close(self) -> None:
        while not self.free.empty():
            await self.free.get_nowait().close()

    async def pay(self, n: int) -> None:
        try:
            await self._pay(n)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:  # counted, not fatal
            self._refused(type(exc).__name__)

    async def _pay(self, n: int) -> None:
        t0 = time.perf_counter()
        status, presented = await self.post(
            "/api/v1/bills/query", {"biller": BILLER, "bill_key": f"31{n:08d}"}
        )
        self.query_ms.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            return self._refused(f"query {status} {_error_name(presented)}")
        wall, t1 = time.time(), time.perf_counter()
        status, paid = await self.post(
            "/api/v1/bills/payments/counter",
            {"biller": BILLER, "reference": presented["reference"],
             "counter_code": "DESK01", "receipt_no": f"R-{n}"},
        )  # fmt: skip
        self.submit_ms.append((time.perf_counter() - t1) * 1000)
        if status != 201:
            return self._refused(f"payment {status} {_error_name(paid)}")
        self.submitted[paid["serial"]] = wall
        return None


def _error_name(body: Any) -> str:
    """The refusal's stable name (the API's error body), so that a refusal can be told apart."""
    return str(body.get("error")) if isinstance(body, dict) else "-"


async def decisions(database_url: str) -> dict[str, tuple[PaymentStatus, datetime | None]]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            rows = await session.execute(
                select(BillPayment.serial, BillPayment.status, BillPayment.decided_at)
            )
            return {str(s): (st, d) for s, st, d in rows.all()}
    finally:
        await engine.dispose()


async def wait_decided(database_url: str, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await decisions(database_url)
        if sum(1 for st, _d in found.values() if st.final) >= count:
            return
        await asyncio.sleep(0.5)


async def simulator_rate(
    settings: Settings, sim_url: str, concurrency: int, seconds: float
) -> float:
    """The simulator's own rate of query + payment, signed by the same HSM, at ``concurrency``."""
    endpoint = BillerEndpoint(BILLER, sim_url, LABEL)
    done = 0
    stop = time.monotonic() + seconds
    keys = iter(range(SIM_KEYS))
    async with open_hsm(settings) as hsm, httpx.AsyncClient() as http:
        client = BillerClient(http, hsm, CHANNEL, 10.0)

        async def worker() -> None:
            nonlocal done
            for k in keys:
                if time.monotonic() > stop:
                    return
                key = f"39{k:08d}"
                q = await client.call(endpoint, "/bills/query", f"query:sim{k}", {"bill_key": key})
                p = q.body["presentment"]
                await client.call(endpoint, "/bills/payments", f"pay:S{k}", {
                    "serial": f"S{k}", "reference": p["reference"], "bill_key": key,
                    "amount": p["amount_due"], "sub_channel": "counter",
                    "paid_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "date": "2026-12-02"})  # fmt: skip
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        return done / (time.monotonic() - started)


def _is_biller_sim(pid: int) -> bool:
    try:
        return b"billersim" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def cpu(pids: dict[str, list[int]], database: str) -> dict[str, float]:
    out = {name: sum(_process_cpu(p) for p in found) for name, found in pids.items()}
    out["pg"] = sum(_process_cpu(p) for p in _backends(database))
    out["load"] = _process_cpu(os.getpid())
    out["machine"] = _machine_cpu()
    return out


async def bench(args: argparse.Namespace, settings: Settings, base: str, sim_url: str,
                pids: dict[str, list[int]], database: str) -> None:  # fmt: skip
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        login = await http.post(
            "/api/v1/staff/login", json={"username": "desk", "password": PASSWORD}
        )
        login.raise_for_status()
        token = login.json()["access_token"]
    url = httpx.URL(base)
    load = Load(str(url.host), int(url.port or 80), token, args.connections)
    try:
        # Warm up the connections, the API's caches and the worker.
        await offer(20, 1, lambda n: load.pay(args.accounts - 1 - n))
        await wait_decided(settings.database_url, len(load.submitted), 30)
        load.submitted.clear()
        load.query_ms.clear()
        load.submit_ms.clear()
        before = cpu(pids, database)
        t0 = time.time()
        offered, peak = await offer(args.rate, args.seconds, load.pay)
        await wait_decided(settings.database_url, len(load.submitted) + 20, args.seconds * 5 + 30)
        after = cpu(pids, database)
    finally:
        await load.close()
    found = await decisions(settings.database_url)
    ours = {s: found[s] for s in load.submitted if s in found}
    paid = {s: d for s, (st, d) in ours.items() if st is PaymentStatus.paid and d is not None}
    latency = [(d.timestamp() - load.submitted[s]) * 1000 for s, d in paid.items()]
    last = max((d.timestamp() for d in paid.values()), default=t0)
    rate = len(paid) / (last - t0) if paid else 0.0
    states: dict[str, int] = {}
    for st, _d in ours.values():
        states[st.value] = states.get(st.value, 0) + 1
    print(f"channel: {CHANNEL_USED}")
    print(f"offered {offered} payments at {args.rate:.0f}/s for {args.seconds:.0f} s "
          f"(at most {peak} in flight); submitted {len(load.submitted)}; "
          f"refused {load.refused or 'none'}; states {states}")  # fmt: skip
    print(f"paid {len(paid)} at {rate:.1f} payments/s (target >= 200)")
    print(f"submission -> paid: p50 {pct(latency, 0.5):.1f} ms, p99 {pct(latency, 0.99):.1f} ms, "
          f"p99.9 {pct(latency, 0.999):.1f} ms (target p99 <= 100)")  # fmt: skip
    print(f"query HTTP p50 {pct(load.query_ms, 0.5):.1f} ms p99 {pct(load.query_ms, 0.99):.1f} ms; "
          f"payment HTTP p50 {pct(load.submit_ms, 0.5):.1f} ms "
          f"p99 {pct(load.submit_ms, 0.99):.1f} ms")  # fmt: skip
    if paid:
        per = {k: (after[k] - before[k]) / len(paid) * 1000 for k in after}
        print("CPU per paid payment (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))
        served = sum(per[k] for k in ("api", "worker", "hsm-sim", "biller-sim", "pg"))
        print(f"CPU per paid payment of the serving side (API, worker, hsm-sim, biller-sim, "
              f"PostgreSQL): {served:.2f} ms, {served * 200 / 1000:.2f} cores at 200/s")  # fmt: skip
    sim = await simulator_rate(settings, sim_url, max(8, peak), min(5.0, args.seconds))
    print(
        f"biller-sim alone (signed query + payment, {max(8, peak)} at once): {sim:.1f}/s; "
        f"ratio paid rate / simulator rate = {rate / sim if sim else float('nan'):.2f}"
    )
    if latency:
        print(f"median submission -> paid {statistics.median(latency):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="payments offered per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--latency-ms", type=int, default=5, help="the simulator's answer time")
    parser.add_argument("--workers", type=int, default=2, help="API worker processes")
    parser.add_argument(
        "--connections", type=int, default=64, help="keep-alive connections of the load"
    )
    parser.add_argument(
        "--interval", type=float, default=2.0,
        help="the worker's outbox interval (each payment's commit wakes it before that)",
    )  # fmt: skip
    args = parser.parse_args()
    args.accounts = int(args.rate * args.seconds) + 200
    redis_url = os.environ.get("CARDSVC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    with scratch("bills") as work:
        var_dir = work.workdir / "var"
        data = data_set(args.accounts, args.latency_ms)
        data["billers"][0]["accounts"] += [
            {"bill_key": f"39{k:08d}", "holder": "李四",
             "bills": [{"bill_id": f"S-{k}", "period": "202611", "amount": 100, "late_fee": 0,
                        "due_date": "2026-12-15"}]}
            for k in range(SIM_KEYS)
        ]  # fmt: skip
        sim_url, stop_sim = start_biller_process(work.workdir / "sim", data)
        try:
            settings = settings_for(work.database_url, work.hsm_url, var_dir)
            asyncio.run(seed(settings, sim_url))
            env = dict(
                os.environ, CARDSVC_MODE="development", CARDSVC_DATABASE_URL=work.database_url,
                CARDSVC_HSM_URL=work.hsm_url, CARDSVC_REDIS_URL=redis_url,
                CARDSVC_LOG_LEVEL="WARNING", CARDSVC_VAR_DIR=str(var_dir),
                CARDSVC_DATABASE_POOL_SIZE="10",
                CARDSVC_WORKER_BILLS_INTERVAL_SECONDS=str(args.interval),
            )  # fmt: skip
            worker = subprocess.Popen(
                [sys.executable, "-m", "cardsvc", "worker", "--job", "bill-outbox"], env=env,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                with running_api(env, args.workers) as (api_pid, base):
                    api = {api_pid, *_descendants(api_pid)}
                    sims = [p for p in _descendants(os.getpid()) if p not in api | {worker.pid}]
                    pids = {
                        "api": sorted(api),
                        "worker": [worker.pid],
                        "hsm-sim": [p for p in sims if not _is_biller_sim(p)],
                        "biller-sim": [p for p in sims if _is_biller_sim(p)],
                    }  # fmt: skip
                    asyncio.run(bench(args, settings, base, sim_url, pids, work.database_name))
            finally:
                worker.terminate()
                worker.wait(timeout=20)
        finally:
            stop_sim()


if __name__ == "__main__":
    main()
