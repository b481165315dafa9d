"""Online authorization with the cardholder's PIN and without, at a fixed request rate, beside the
HSM's own PIN verification rate measured in the same run (DESIGN §13: p99 ≤ 25 ms at 200/s).

The parts and the schedule are those of ``online_auth.py`` (PostgreSQL, Redis, an ``hsm-sim`` with
the development keys, the API under uvicorn; open-loop requests timed from their scheduled send
time; 4 in 5 jobs a purchase, 1 in 5 a pre-authorization and its completion). Every card's account
gets a PIN first (through the HSM, as a counter sets it). The API runs with a no-PIN limit for the
shops' category above every amount sent, so that one server answers both phases:

- **without PIN**: purchases and pre-authorizations carry no ``pin_block`` (under the limit);
- **with PIN**: each carries the PIN block of the holder's PIN under the terminal's session PIN key,
  which the host always checks (one ``PIN_VERIFY`` in the HSM, a try taken and settled).

Then ``PIN_VERIFY`` alone over the wire against the same hsm-sim (``--in-flight`` at once): the
raw rate the PIN phase draws on, and the one-call latency. Printed per phase: p50/p99/p99.9 by
kind, the codes, the CPU per request of the API, hsm-sim and PostgreSQL, and the differences.

    uv run python bench/online.py [--rate 200] [--seconds 20] [--terminals 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import httpx
from _common import OnlineJobs, Slot, running_api, scratch
from _rawhttp import RawConnection
from online_auth import cpu_snapshot, percentile, run_schedule, seed

from cardsvc.accounts import service as accounts
from cardsvc.db import create_engine, session_factory, unit_of_work
from cardsvc.hsm import HsmClient, PinKeyRef, PinOffset
from cardsvc.hsm.connect import connect_hsm
from cardsvc.settings import Settings
from hsm_sim import pboc
from hsm_sim.pin import format0_block
from terminals.devices.host_client import HostClient, dev_tmk

PIN = "480716"
PAD = "321189999999"  # the PIN pad the seeding types every holder's PIN on


async def pin_key(hsm: HsmClient) -> tuple[PinKeyRef, bytes]:
    """A PIN pad's session PIN key: the HSM's blob and the clear key the pad holds."""
    opened = await hsm.terminal_session_open(bytes.fromhex(PAD))
    return PinKeyRef(opened.pin_key_under_lmk), pboc.tdes_decrypt(
        dev_tmk(PAD), opened.pin_key_under_tmk
    )


async def set_pins(url: str, hsm_url: str, cards: list[str]) -> None:
    """Every holder's account gets ``PIN`` as a counter sets it (block → HSM → offset)."""
    settings = Settings(mode="development", database_url=url)
    engine = create_engine(url, pool_size=4)
    sessions = session_factory(engine)
    hsm = await connect_hsm(hsm_url, timeout=30, pool_size=8)
    key, clear = await pin_key(hsm)
    gate = asyncio.Semaphore(8)

    async def one(card_no: str) -> None:
        async with gate:
            async with unit_of_work(sessions) as s:
                account = await accounts.for_card(s, settings, card_no)
                target = await accounts.pin_target(s, account, card_no)
            block = pboc.tdes_encrypt(clear, format0_block(PIN, card_no))
            made = await accounts.make_pin(
                hsm, settings, target, accounts.PinEntry(key, block, card_no)
            )
            async with unit_of_work(sessions) as s:
                await accounts.store_pin(s, settings, target, made, actor="bench")

    await asyncio.gather(*(one(c) for c in cards))
    await hsm.close()
    await engine.dispose()


async def raw_pin_verify(
    url: str, hsm_url: str, card_no: str, n: int, in_flight: int
) -> tuple[float, float]:
    """``PIN_VERIFY`` alone over the wire: (verifications/s with ``in_flight`` at once, p50 ms
    of one call with nothing else in flight)."""
    settings = Settings(mode="development", database_url=url)
    engine = create_engine(url, pool_size=2)
    async with session_factory(engine)() as s:
        account = await accounts.for_card(s, settings, card_no)
        reference = account.reference
        stored = PinOffset(account.pin_offset or "", account.pin_pvk_version or 0)
    await engine.dispose()
    assert reference is not None  # noqa: S101 - set_pins opened it
    hsm = await connect_hsm(hsm_url, timeout=30, pool_size=in_flight)
    key, clear = await pin_key(hsm)
    block = pboc.tdes_encrypt(clear, format0_block(PIN, card_no))

    async def verify() -> None:
        ok = await hsm.pin_verify(key, block, pan=card_no, validation_data=reference, stored=stored)
        if not ok:
            raise SystemExit("the bench PIN does not verify")

    single = []
    for _ in range(300):
        t0 = time.perf_counter()
        await verify()
        single.append((time.perf_counter() - t0) * 1000)
    gate = asyncio.Semaphore(in_flight)

    async def gated() -> None:
        async with gate:
            await verify()

    start = time.perf_counter()
    await asyncio.gather(*(gated() for _ in range(n)))
    rate = n / (time.perf_counter() - start)
    await hsm.close()
    return rate, statistics.median(single)


async def phase(
    base: str,
    terminals: list[str],
    cards: list[str],
    rate: float,
    seconds: float,
    *,
    with_pin: bool,
    server_pid: int,
    database: str,
    serial_base: int,
) -> dict[str, Any]:
    url = httpx.URL(base)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        signed = [HostClient(http, t, dev_tmk(t)) for t in terminals]
        for h in signed:
            await h.sign_in()
    slots = [Slot(h, RawConnection(str(url.host), int(url.port or 80))) for h in signed]
    jobs = OnlineJobs(
        cards,
        [h.terminal_no for h in signed],
        serial_base=serial_base,
        pin=PIN if with_pin else None,
    )

    before = cpu_snapshot(server_pid, database)
    by_kind, errors = await run_schedule(slots, rate, seconds, jobs.make_job)
    after = cpu_snapshot(server_pid, database)
    for slot in slots:
        await slot.conn.close()
    sent = jobs.sent
    return {
        "by_kind": by_kind,
        "errors": errors,
        "codes": jobs.codes,
        "cpu": {k: (after[k] - before[k]) * 1000 / sent for k in after},
        "sent": sent,
    }


def report(name: str, result: dict[str, Any]) -> tuple[float, float]:
    by_kind = result["by_kind"]
    latencies = [ms for values in by_kind.values() for ms in values]
    p50, p99 = statistics.median(latencies), percentile(latencies, 99)
    print(
        f"{name}: {len(latencies)} answers timed, {result['errors']} without an answer; "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (target <= 25 ms), "
        f"p99.9 {percentile(latencies, 99.9):.1f} ms, max {max(latencies):.1f} ms"
    )
    print(
        "  by kind: "
        + "; ".join(
            f"{kind} p50 {statistics.median(v):.1f} ms, p99 {percentile(v, 99):.1f} ms ({len(v)})"
            for kind, v in sorted(by_kind.items())
        )
    )
    print(f"  response codes: {dict(sorted(result['codes'].items()))}")
    cpu = result["cpu"]
    print(
        f"  CPU per request ({result['sent']}): API {cpu['api']:.2f} ms, hsm-sim {cpu['hsm']:.2f},"
        f" PostgreSQL {cpu['pg']:.2f}, load generator {cpu['load']:.2f}, machine {cpu['machine']:.2f}"
    )
    return p99, cpu["api"]


async def bench(args: argparse.Namespace, work: Any, server_pid: int, base: str) -> None:
    terminals = [f"3211800{i:05d}" for i in range(args.terminals)]

    async def run(with_pin: bool, serial_base: int) -> dict[str, Any]:
        return await phase(
            base, terminals, args.cards_list, args.rate, args.seconds, with_pin=with_pin,
            server_pid=server_pid, database=work.database_name, serial_base=serial_base,
        )  # fmt: skip

    without = await run(False, 0)
    with_ = await run(True, 10**6)
    raw_rate, one_call = await raw_pin_verify(
        work.database_url, work.hsm_url, args.cards_list[0], args.verifies, args.in_flight
    )
    print(f"online authorization at {args.rate:.0f} HTTP requests/s for {args.seconds:.0f} s:")
    p99_without, api_without = report("without PIN", without)
    p99_with, api_with = report("with PIN", with_)
    pin_requests = sum(
        n for code, n in with_["codes"].items() if not code.startswith("completion")
    ) / max(1, with_["sent"])
    print(
        f"HSM PIN_VERIFY alone over the wire ({args.in_flight} in flight): {raw_rate:,.0f}/s; "
        f"one call p50 {one_call:.2f} ms"
    )
    print(
        f"  the PIN phase asks {args.rate * pin_requests:,.0f} PIN_VERIFY/s: "
        f"{args.rate * pin_requests / raw_rate:.1%} of the raw rate "
        f"(the raw rate is {raw_rate / (args.rate * pin_requests):.1f}x the need)"
    )
    print(
        f"with / without PIN: p99 {p99_with / p99_without:.2f}x "
        f"({p99_with - p99_without:+.1f} ms); API CPU per request {api_with / api_without:.2f}x "
        f"({api_with - api_without:+.2f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--terminals", type=int, default=64)
    parser.add_argument("--cards", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--merchants", type=int, default=16)
    parser.add_argument("--verifies", type=int, default=5000, help="raw PIN_VERIFY calls")
    parser.add_argument("--in-flight", type=int, default=8)
    args = parser.parse_args()
    redis_url = os.environ.get("CARDSVC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    with scratch("online_pin") as work:
        terminals = [f"3211800{i:05d}" for i in range(args.terminals)]
        args.cards_list = asyncio.run(
            seed(work.database_url, terminals, args.cards, 100_000_000, args.merchants)
        )
        print(f"setting the PIN of {args.cards} accounts through the HSM ...")
        asyncio.run(set_pins(work.database_url, work.hsm_url, args.cards_list))
        env = dict(
            os.environ, CARDSVC_MODE="development", CARDSVC_DATABASE_URL=work.database_url,
            CARDSVC_HSM_URL=work.hsm_url, CARDSVC_REDIS_URL=redis_url, CARDSVC_LOG_LEVEL="WARNING",
            CARDSVC_VAR_DIR=str(work.workdir / "var"), CARDSVC_DATABASE_POOL_SIZE="10",
            CARDSVC_ONLINE_DAILY_LIMIT_DEFAULT=str(10**12), CARDSVC_ONLINE_DAILY_LIMITS="{}",
            CARDSVC_ONLINE_NO_PIN_LIMITS='{"retail": 5000}',
        )  # fmt: skip
        with running_api(env, args.workers) as (pid, base):
            asyncio.run(bench(args, work, pid, base))


if __name__ == "__main__":
    main()
