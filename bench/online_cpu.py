"""API CPU per online authorization, in process, split by step (where ``online_auth.py``'s time goes).

``online_auth.py`` measures latency with everything on one machine, where the API, PostgreSQL,
hsm-sim and the load generator share the cores. This bench drives the ASGI app directly (no HTTP
server, no socket to the client), one request at a time against a real PostgreSQL and a real
hsm-sim, and reports the API process's CPU per request and, per step of the request, the CPU spent
inside it (wrapping the service and repository functions named below). A step's time includes the
round trip it waits on only as far as the event loop spends CPU on it.

    uv run python bench/online_cpu.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from _common import scratch
from online import PIN, set_pins
from online_auth import seed

from cardsvc.accounts import repository as accounts_repo
from cardsvc.accounts import service as accounts_service
from cardsvc.app import create_app
from cardsvc.ledger import repository as ledger_repo
from cardsvc.ledger import service as ledger_service
from cardsvc.settings import Settings
from terminals.access import repository as access_repo
from terminals.access import service as access_service
from terminals.devices.host_client import HostClient, dev_tmk, encode_body
from terminals.online import pins as online_pins
from terminals.online import repository as online_repo
from terminals.online import service as online_service

STEPS: list[tuple[ModuleType, list[str]]] = [
    (access_repo, ["take_seq"]),
    (access_service, ["verify_mac"]),
    (online_service, ["authorize", "complete"]),
    (online_pins, ["check_before_number", "settle"]),
    (accounts_service, ["take_pin_try_after", "verify_pin_try", "settle_pin_try"]),
    (accounts_repo, ["take_pin_try_after", "clear_pin_failures"]),
    (online_repo, ["insert_if_new", "card_standing", "reserve_usage", "by_serial", "save"]),
    (ledger_service, ["post", "place_hold", "post_hold"]),
    (
        ledger_repo,
        ["lock_accounts_by_ref", "lock_hold_accounts", "write_transaction", "place_hold"],
    ),
]
spent: dict[str, float] = {}
calls: Counter[str] = Counter()


def timed(name: str, step: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(step)
    async def run(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return await step(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.process_time() - started
            calls[name] += 1

    return run


def instrument() -> None:
    for module, names in STEPS:
        for name in names:
            label = f"{module.__name__.rsplit('.', 1)[0].split('.')[-1]}.{name}"
            setattr(module, name, timed(label, getattr(module, name)))


async def call(app: Any, host: HostClient, path: str, payload: Mapping[str, object]) -> int:
    """One signed POST through the ASGI app; returns the status."""
    body = encode_body(payload)
    headers = host.signed_headers("POST", path, body) | {"Content-Type": "application/json"}
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    await app(scope, receive, send)
    return status


async def run(db_url: str, hsm_url: str, var_dir: Path, requests: int) -> None:
    terminals = [f"3211800{i:05d}" for i in range(8)]
    cards = await seed(db_url, terminals, 500, 100_000_000, 4)
    await set_pins(db_url, hsm_url, cards)
    # The shops' payments of 10 yuan go without a PIN unless they carry one (then it is checked).
    settings = Settings(
        mode="development", database_url=db_url, hsm_url=hsm_url, log_level="WARNING",
        var_dir=str(var_dir), online_daily_limit_default=10**12, online_daily_limits={},
        online_no_pin_limits={"retail": 1000},
    )  # fmt: skip
    app = create_app(settings)
    rng = random.Random(1)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            hosts = [HostClient(http, t, dev_tmk(t)) for t in terminals]
            for host in hosts:
                await host.sign_in()
        serials = dict.fromkeys(terminals, 0)

        async def one(i: int, kind: str, pin: bool = False) -> None:
            host = hosts[i % len(hosts)]
            serials[host.terminal_no] += 1
            serial = serials[host.terminal_no]
            asn = rng.choice(cards)
            payload = {"terminal_serial": serial, "asn": asn, "amount": 1000}
            if pin:
                payload["pin_block"] = host.pin_block(PIN, asn)
            statuses = [await call(app, host, f"/api/v1/online/{kind}", payload)]
            if kind == "preauth":
                serials[host.terminal_no] += 1
                completion = {
                    "terminal_serial": serial + 1,
                    "original_serial": serial,
                    "amount": 600,
                }
                statuses.append(await call(app, host, "/api/v1/online/completion", completion))
            if statuses != [200] * len(statuses):
                raise RuntimeError(f"{kind} answered {statuses}")

        for i in range(200):  # warm up: connections, prepared statements, imports
            await one(i, "purchase" if i % 4 else "preauth")
        instrument()
        for kind, pin, label in (
            ("purchase", False, "purchase without PIN"),
            ("purchase", True, "purchase with PIN"),
            ("preauth", False, "pre-authorization + completion without PIN"),
            ("preauth", True, "pre-authorization (with PIN) + completion"),
        ):
            spent.clear()
            calls.clear()
            started = time.process_time()
            for i in range(requests):
                await one(i, kind, pin)
            total = (time.process_time() - started) * 1000 / requests
            print(
                f"{label}: {total:.2f} ms of CPU in this process per {kind} (incl. the client's signing)"
            )
            for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
                print(
                    f"  {name:34s} {seconds * 1000 / requests:6.3f} ms  ({calls[name] / requests:.0f}x)"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    with scratch("online_cpu") as work:
        asyncio.run(run(work.database_url, work.hsm_url, work.workdir / "var", args.requests))


if __name__ == "__main__":
    main()
