"""Personalization of one card the way a counter does it (DESIGN §13 target: ≤ 1.5 s per card):
the counter agent's client and relay in this process, a real ``cardsvc serve`` (development mode,
its own hsm-sim process) over HTTP, the blank virtual card behind pcscd + vpcd.

Prints per card the APDUs and round trips, and the medians of the time in all, at the card
(pcscd + vpcd + the virtual card), in the API's round trips, and inside them at the HSM
(``cardsvc_hsm_command_duration_seconds`` from ``/metrics``); the rest is the agent itself. The
ratio to the card's own time is the cost of driving the card from the server.

    flock /tmp/bench.lock uv run python bench/personalize.py --cards 10 [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from cardsvc.agent.api import Api, Login
from cardsvc.db import unit_of_work
from cardsvc.reader.pcsc import PcscLink, list_readers, wait_for_card, wait_for_removal
from cardsvc.reader.relay import relay
from cardsvc.resources import open_resources
from cardsvc.settings import Mode, Settings
from cardsvc.staff import service as staff
from cardsvc.staff.auth import Role
from terminals.devices.card import make_blank_card
from terminals.devices.vpcd import VpcdCard
from tests.factories import resident_id
from tests.serving import dev_env, serving

PASSWORD = "bench personalization"  # noqa: S105 - an account of the bench's own server
SESSIONS = "/api/v1/personalization/sessions"
_HSM_SUM = re.compile(
    r'^cardsvc_hsm_command_duration_seconds_sum\{command="[A-Z_]+"\} (\S+)$', re.M
)


@dataclass(frozen=True)
class Card:
    apdus: int
    round_trips: int
    total: float
    card: float
    api: float
    hsm: float


async def _seed(settings: Settings) -> None:
    async with open_resources(settings) as resources, unit_of_work(resources.sessions) as session:
        for username, role in (
            ("bench-clerk", Role.counter_operator),
            ("bench-boss", Role.supervisor),
        ):
            await staff.create_staff(
                session, username=username, password=PASSWORD, roles=[role], actor="bench"
            )


def _hsm_seconds(base: str) -> float:
    return sum(float(v) for v in _HSM_SUM.findall(httpx.get(f"{base}/metrics").text))


def _applications(clerk: Api, boss: Api, n: int) -> list[int]:
    ids = []
    for i in range(n):
        resident = clerk.call(
            "POST",
            "/api/v1/residents",
            {"resident_id": resident_id(birth=f"199001{i % 28 + 1:02d}", order=f"{i % 900 + 100:03d}"),
             "name": "测试", "phone": "13800000000", "address": "x"},
        )  # fmt: skip
        application = clerk.call("POST", "/api/v1/applications", {"resident_id": resident["id"]})
        boss.call("POST", f"/api/v1/applications/{application['id']}/approve")
        ids.append(int(application["id"]))
    return ids


def _personalize(base: str, clerk: Api, link: PcscLink, application: int, reader: str) -> Card:
    hsm_before = _hsm_seconds(base)
    at_card = at_api = 0.0
    apdus = trips = 0
    started = time.perf_counter()
    t = time.perf_counter()
    turn = clerk.call(
        "POST", SESSIONS, {"application_id": application, "atr": link.atr().hex(), "reader": reader}
    )
    at_api += time.perf_counter() - t
    trips += 1
    while turn["state"] == "running":
        t = time.perf_counter()
        responses = relay(link, [bytes.fromhex(c) for c in turn["commands"]])
        at_card += time.perf_counter() - t
        apdus += len(responses)
        t = time.perf_counter()
        turn = clerk.call(
            "POST",
            f"{SESSIONS}/{turn['session_id']}/steps",
            {"seq": turn["seq"], "responses": [r.hex() for r in responses]},
        )
        at_api += time.perf_counter() - t
        trips += 1
    total = time.perf_counter() - started
    if turn["state"] != "done":
        raise RuntimeError(f"personalization ended {turn['state']}: {turn['detail']}")
    return Card(apdus, trips, total, at_card, at_api, _hsm_seconds(base) - hsm_before)


def main(cards: int, database_url: str | None) -> None:
    readers = [r for r in list_readers() if r.startswith("Virtual PCD")]
    if not readers:
        raise SystemExit("no vpcd reader in pcscd: start pcscd with vsmartcard-vpcd")
    reader = readers[0]
    with tempfile.TemporaryDirectory(prefix="bench-perso-") as tmp:
        var_dir = Path(tmp) / "var"
        env = dev_env(var_dir)
        if database_url:
            env["CARDSVC_DATABASE_URL"] = database_url
        with serving(env, ready="/readyz") as base:
            settings = Settings(
                mode=Mode.development, var_dir=var_dir,
                database_url=env.get("CARDSVC_DATABASE_URL", ""), hsm_url="spawn",
            )  # fmt: skip
            asyncio.run(_seed(settings))
            with (
                Api(base, Login("bench-clerk", lambda: PASSWORD)) as clerk,
                Api(base, Login("bench-boss", lambda: PASSWORD)) as boss,
            ):
                results = []
                for i, application in enumerate(_applications(clerk, boss, cards + 1)):
                    slot = VpcdCard(make_blank_card(bytes.fromhex(f"BE{i:014X}")))
                    slot.start()
                    try:
                        wait_for_card(reader, 5.0)
                        with PcscLink(reader) as link:
                            results.append(_personalize(base, clerk, link, application, reader))
                    finally:
                        slot.stop()
                        wait_for_removal(reader, 5.0)
    results = results[1:]  # the first card warms the server up (connections, key caches)

    def median(values: list[float]) -> float:
        return statistics.median(values)

    total = median([r.total for r in results])
    card = median([r.card for r in results])
    api = median([r.api for r in results])
    hsm = median([r.hsm for r in results])
    print(
        f"backend: {'PostgreSQL' if database_url else 'SQLite'}; {len(results)} cards through the agent's path, pcscd + vpcd"
    )
    print(f"per card: {results[0].apdus} APDUs, {results[0].round_trips} API round trips")
    print(f"median {total:.3f} s per card (max {max(r.total for r in results):.3f} s)")
    print(f"  at the card (pcscd + vpcd)  {card:.3f} s")
    print(f"  API round trips             {api:.3f} s, of which the HSM {hsm:.3f} s")
    print(f"  the agent itself            {max(0.0, total - card - api):.3f} s")
    print(f"ratio to the card's own time: {total / card:.1f}")
    print(f"target ≤ 1.5 s per card: {'met' if total <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cards", type=int, default=10)
    parser.add_argument("--database-url", default=None, help="PostgreSQL (default: SQLite)")
    args = parser.parse_args()
    main(args.cards, args.database_url)
