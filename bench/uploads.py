"""Offline upload ingestion end to end (DESIGN §13): records/s with 500-record batches.

Real parts: PostgreSQL (``CARDSVC_BENCH_DATABASE_URL``, default the local ``test`` server; a
fresh database is created and dropped), Redis when ``CARDSVC_BENCH_REDIS_URL`` is set, an
``hsm-sim`` process with the development keys (``hsm_sim.child``), and the API under uvicorn
in a subprocess on loopback. Several terminals sign in and upload concurrently over HTTP; each
record is verified by TAC_VERIFY, stored and posted. Prints the median of the runs, and the raw
TAC_VERIFY rate over the wire measured in the same run (the HSM's share of the limit), and the
raw ledger posting rate (one 500-line posting after another, in this process). Bodies are
encoded and signed before the clock starts (see ``upload_all``).

    uv run python bench/uploads.py [--records 20000] [--terminals 4] [--runs 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from _common import add_active_cards, running_api, scratch

from cardsvc.cards.numbers import make_card_no
from cardsvc.db import create_engine, session_factory, unit_of_work
from cardsvc.hsm.connect import connect_hsm
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from terminals.devices.host_client import HostClient, dev_tmk, encode_body
from terminals.devices.validator import dev_signed_record
from terminals.registry import service as registry
from terminals.registry.models import MerchantCategory

BATCH = 500
UPLOAD_PATH = "/api/v1/terminal/uploads"
LOCAL = ZoneInfo("Asia/Shanghai")
MERCHANT = "321100000000900"


async def seed(url: str, terminals: list[str], cards: int, balance: int) -> list[str]:
    engine = create_engine(url, pool_size=2)
    numbers = [make_card_no("3211", 500_000 + i) for i in range(cards)]
    async with unit_of_work(session_factory(engine)) as session:
        await registry.create_merchant(
            session, merchant_no=MERCHANT, name="Bench Bus", category=MerchantCategory.bus,
            settlement_account="6222000000000900", actor="bench",
        )  # fmt: skip
        for t in terminals:
            await registry.create_terminal(
                session, terminal_no=t, psam_no="50" + t + "00", merchant_no=MERCHANT, actor="bench"
            )
        await add_active_cards(session, numbers)
        await ledger.post(
            session,
            PostingRequest(
                idempotency_key="bench-funding",
                tx_type="load",
                clearing_date=date.today(),
                entries=[
                    Entry(
                        AccountRef(AccountKind.counter_cash, "BENCH"),
                        Side.debit,
                        balance * len(numbers),
                    )
                ]
                + [
                    Entry(AccountRef(AccountKind.card_float, no), Side.credit, balance)
                    for no in numbers
                ],
            ),
        )
    await engine.dispose()
    return numbers


COUNTERS: dict[str, int] = {}


def make_batches(
    terminals: list[str], cards: list[str], per_terminal: int, run: int
) -> dict[str, list[dict[str, Any]]]:
    """Genuine records: each card's offline counter goes up by one per record, across terminals
    and runs, so the chains have no gaps (as on a real day)."""
    counters = COUNTERS
    for no in cards:
        counters.setdefault(no, 0)
    now = datetime.now(LOCAL) - timedelta(minutes=5)
    out: dict[str, list[dict[str, Any]]] = {}
    k = 0
    for ti, t in enumerate(terminals):
        records = []
        for i in range(per_terminal):
            asn = cards[k % len(cards)]
            k += 1
            counter = counters[asn]
            counters[asn] += 1
            records.append(
                dev_signed_record(
                    asn=asn, offline_counter=counter, balance_before=100_000, amount=200, terminal_no=t,
                    terminal_serial=run * 1_000_000 + i, dt14=(now + timedelta(seconds=ti)).strftime("%Y%m%d%H%M%S"),
                )
            )  # fmt: skip
        out[t] = records
    return out


async def upload_all(base: str, records: dict[str, list[dict[str, Any]]], run: int) -> float:
    """Upload every terminal's batches concurrently; the clock covers only the round trips.

    The load generator shares the 2 cores with the API: bodies are encoded and signed (SHA-256
    of the body, the session-key MAC, the next sequence number) before the clock starts, so
    what is timed is the server's work, not the client's.
    """
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        clients = {t: HostClient(http, t, dev_tmk(t)) for t in records}
        await asyncio.gather(*(c.sign_in() for c in clients.values()))
        prepared: dict[str, list[tuple[bytes, dict[str, str], int]]] = {}
        for t, rs in records.items():
            prepared[t] = []
            for b in range(0, len(rs), BATCH):
                chunk = rs[b : b + BATCH]
                payload = {
                    "batch_no": run * 100_000 + b // BATCH + 1, "psam_no": "50" + t + "00",
                    "record_count": len(chunk), "total_amount": sum(r["amount"] for r in chunk),
                    "blacklist_version": 0, "params_version": 0, "records": chunk,
                }  # fmt: skip
                body = encode_body(payload)
                headers = clients[t].signed_headers("POST", UPLOAD_PATH, body)
                headers["Content-Type"] = "application/json"
                prepared[t].append((body, headers, len(chunk)))

        async def one(t: str) -> None:
            for body, headers, count in prepared[t]:
                response = await http.post(UPLOAD_PATH, content=body, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"upload failed: {response.status_code} {response.text[:300]}"
                    )
                answer = response.json()
                if answer["accepted_count"] != count:
                    codes = {r["code"] for r in answer["results"]}
                    raise RuntimeError(f"records refused: {codes}")

        started = time.perf_counter()
        await asyncio.gather(*(one(t) for t in records))
        return time.perf_counter() - started


async def raw_ledger_rate(url: str, cards: list[str], batches: int) -> float:
    """Ledger postings alone, in this process, one after another: records/s when each posting
    debits the card floats of a 500-record batch and credits the merchant's pending account."""
    engine = create_engine(url, pool_size=2)
    factory = session_factory(engine)
    try:
        elapsed = 0.0
        for n in range(batches + 1):
            entries = [
                Entry(AccountRef(AccountKind.card_float, cards[(n * BATCH + i) % len(cards)]), Side.debit, 1)
                for i in range(BATCH)
            ]  # fmt: skip
            request = PostingRequest(
                idempotency_key=f"bench-ledger-{n}",
                tx_type="purchase_batch",
                clearing_date=date.today(),
                entries=[*entries, Entry(AccountRef(AccountKind.merchant_pending, MERCHANT), Side.credit, BATCH)],
            )  # fmt: skip
            started = time.perf_counter()
            async with unit_of_work(factory) as session:
                await ledger.post(session, request)
            if n:  # the first one warms the connection and the prepared statements
                elapsed += time.perf_counter() - started
        return batches * BATCH / elapsed
    finally:
        await engine.dispose()


async def raw_tac_rate(hsm_url: str, records: list[dict[str, Any]]) -> float:
    client = await connect_hsm(hsm_url)
    wire = [
        {
            k: r[k]
            for k in (
                "asn",
                "key_version",
                "amount",
                "tx_type",
                "terminal_no",
                "terminal_serial",
                "datetime",
                "tac",
            )
        }
        | {"kind": "purchase"}
        for r in records
    ]
    try:
        await client.tac_verify(wire[:BATCH])
        started = time.perf_counter()
        await asyncio.gather(
            *(client.tac_verify(wire[i : i + BATCH]) for i in range(0, len(wire), BATCH))
        )
        return len(wire) / (time.perf_counter() - started)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--terminals", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cards", type=int, default=2000)
    args = parser.parse_args()
    with scratch("uploads") as work:
        terminals = [f"3211900{i:05d}" for i in range(args.terminals)]
        cards = asyncio.run(seed(work.database_url, terminals, args.cards, 10_000_000))
        env = dict(os.environ, CARDSVC_MODE="development", CARDSVC_DATABASE_URL=work.database_url, CARDSVC_HSM_URL=work.hsm_url,
                   CARDSVC_LOG_LEVEL="WARNING", CARDSVC_VAR_DIR=str(work.workdir / "var"), CARDSVC_DATABASE_POOL_SIZE="10")  # fmt: skip
        if os.environ.get("CARDSVC_BENCH_REDIS_URL"):
            env["CARDSVC_REDIS_URL"] = os.environ["CARDSVC_BENCH_REDIS_URL"]
        per_terminal = args.records // args.terminals
        rates, raw = [], []
        with running_api(env, args.workers) as (_pid, base):
            for run in range(args.runs):
                batches = make_batches(terminals, cards, per_terminal, run + 1)
                elapsed = asyncio.run(upload_all(base, batches, run + 1))
                total = per_terminal * len(terminals)
                rates.append(total / elapsed)
                records = [r for rs in batches.values() for r in rs]
                raw.append(asyncio.run(raw_tac_rate(work.hsm_url, records)))
                print(
                    f"run {run + 1}: {total} records in {elapsed:.2f} s = {total / elapsed:,.0f} records/s"
                )
        median = statistics.median(rates)
        raw_median = statistics.median(raw)
        ledger_rate = asyncio.run(raw_ledger_rate(work.database_url, cards, 20))
        print(
            f"upload ingestion, {BATCH}-record batches, {args.terminals} terminals, {args.workers} API workers:"
        )
        print(f"  median {median:,.0f} records/s end to end (target >= 5,000)")
        print(
            f"  raw TAC_VERIFY over the wire, same run: median {raw_median:,.0f} records/s; ratio {median / raw_median:.2f}"
        )
        print(
            f"  raw ledger posting ({BATCH} card debits + 1 credit, one at a time, in process): "
            f"{ledger_rate:,.0f} records/s; ratio {median / ledger_rate:.2f}"
        )


if __name__ == "__main__":
    main()
