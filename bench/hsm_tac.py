"""TAC_VERIFY throughput over the wire vs. the raw in-process derive+MAC rate (DESIGN §13).

Starts a real ``hsm-sim serve`` child process with the development keys, sends ``--batches``
batches of ``--records`` purchase/load records with ``--in-flight`` batches outstanding, and
reports the median records/s next to the single-core raw rate measured in the same run
(card key derivation from the group-level key + TAC MAC, no caching). Target: ≥ 10,000/s.

    uv run python bench/hsm_tac.py [--batches 10] [--records 10000] [--in-flight 3] [--cards 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from typing import Any

from cardsvc.hsm.connect import connect_hsm
from hsm_sim import pboc
from hsm_sim.child import hsm_process
from hsm_sim.keystore import DEV_KEYS
from hsm_sim.settings import DEV_GROUP_FACTOR

MTK = bytes.fromhex(next(v for label, _, v in DEV_KEYS if label == "MTK"))
GROUP = bytes.fromhex(DEV_GROUP_FACTOR)


def make_records(n: int, cards: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    asns = [
        bytes.fromhex(f"3211{rng.randrange(10**11):011d}{rng.randrange(10)}") for _ in range(cards)
    ]
    group_key = pboc.diversify(MTK, GROUP)
    records: list[dict[str, Any]] = []
    for i in range(n):
        asn = rng.choice(asns)
        dtk = pboc.diversify(group_key, asn)
        terminal = bytes.fromhex(f"{rng.randrange(10**12):012d}")
        amount = rng.randrange(1, 1000)
        day = f"2024{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
        dt = f"{day}{rng.randrange(24):02d}{rng.randrange(60):02d}00"
        if i % 10:
            serial = rng.randrange(1 << 32)
            tac = pboc.purchase_tac(dtk, amount, 6, terminal, serial, dt)
            records.append(
                {
                    "kind": "purchase",
                    "asn": asn.hex().upper(),
                    "key_version": 1,
                    "amount": amount,
                    "tx_type": 6,
                    "terminal_no": terminal.hex().upper(),
                    "terminal_serial": serial,
                    "datetime": dt,
                    "tac": tac.hex().upper(),
                }
            )
        else:
            balance, counter = rng.randrange(100_000), rng.randrange(1000)
            tac = pboc.load_tac(dtk, balance + amount, counter, amount, 2, terminal, dt)
            records.append(
                {
                    "kind": "load",
                    "asn": asn.hex().upper(),
                    "key_version": 1,
                    "amount": amount,
                    "tx_type": 2,
                    "terminal_no": terminal.hex().upper(),
                    "balance_after": balance + amount,
                    "online_counter": counter,
                    "datetime": dt,
                    "tac": tac.hex().upper(),
                }
            )
    return records


def raw_rate(n: int = 20_000) -> float:
    """Single core: derive DTK = div(group-level key, ASN), TAC key, MAC; no cache."""
    rng = random.Random(7)
    diversifier = pboc.Diversifier(pboc.diversify(MTK, GROUP))
    asns = [rng.randbytes(8) for _ in range(n)]
    data = bytes(22)
    start = time.perf_counter()
    for asn in asns:
        pboc.mac4(pboc.tac_key(diversifier.derive(asn)), data)
    return n / (time.perf_counter() - start)


async def over_the_wire(
    url: str, batches: list[list[dict[str, Any]]], in_flight: int
) -> tuple[list[float], float]:
    client = await connect_hsm(url, timeout=30, pool_size=in_flight)
    await client.tac_verify(batches[0][:100])  # open the connections
    gate = asyncio.Semaphore(in_flight)
    rates: list[float] = []

    async def one(batch: list[dict[str, Any]]) -> None:
        async with gate:
            t0 = time.perf_counter()
            result = await client.tac_verify(batch)
            rates.append(len(batch) / (time.perf_counter() - t0))
            if not all(result.results):
                raise SystemExit(f"{result.results.count(False)} records failed verification")

    start = time.perf_counter()
    await asyncio.gather(*(one(b) for b in batches))
    total = sum(len(b) for b in batches) / (time.perf_counter() - start)
    await client.close()
    return rates, total


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=3)
    parser.add_argument(
        "--cards", type=int, default=10_000, help="distinct cards (cache hit ratio)"
    )
    parser.add_argument("--workers", type=int, default=2, help="HSM_SIM_WORKERS of the server")
    args = parser.parse_args()

    print(f"preparing {args.batches} x {args.records} records over {args.cards} cards ...")
    batches = [make_records(args.records, args.cards, seed) for seed in range(args.batches)]
    raws = [raw_rate() for _ in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        async with hsm_process(tmp, env={"HSM_SIM_WORKERS": str(args.workers)}) as url:
            rounds = [await over_the_wire(url, batches, args.in_flight) for _ in range(3)]
    raw = statistics.median(raws)
    totals = [total for _, total in rounds]
    per_batch = statistics.median([r for rates, _ in rounds for r in rates])
    wire = statistics.median(totals)
    print(
        f"raw in-process derive+MAC (1 core, no cache): median {raw:,.0f} records/s"
        f"  {[round(r) for r in raws]}"
    )
    print(f"TAC_VERIFY over the wire, {args.in_flight} batches in flight, {args.workers} workers:")
    print(f"  throughput: median {wire:,.0f} records/s  {[round(t) for t in totals]}")
    print(f"  single batch: median {per_batch:,.0f} records/s")
    print(
        f"  ratio wire / raw: {wire / raw:.2f}"
        f"   target >= 10,000/s: {'MET' if wire >= 10_000 else 'NOT MET'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
