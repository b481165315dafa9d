"""No database connection or lock is held while the HSM works: with an HSM that answers in
500 ms and a pool of two connections, routes that need no HSM (health, staff reads) answer while
terminal requests still wait for the HSM (a held connection would make them wait too)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from cardsvc.app import create_app
from cardsvc.db import create_engine, session_factory
from cardsvc.hsm import HsmClient
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from tests.issuance.helpers import resident_id, staff_headers
from tests.terminals.helpers import build_registry, host

BLACKLIST = "/api/v1/terminal/lists/blacklist"
RESIDENTS = "/api/v1/residents"


class SlowHsm:
    """Every call waits ``delay`` seconds before the real HSM answers."""

    def __init__(self, inner: HsmClient, delay: float) -> None:
        self._inner = inner
        self.delay = delay

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._inner, name)

        async def slowly(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(self.delay)
            return await call(*args, **kwargs)

        return slowly


async def test_a_slow_hsm_holds_no_connection(resources: Resources) -> None:
    world = await build_registry(resources, buses=2, taxis=2)
    engine = create_engine(resources.settings.database_url, pool_size=2)
    slow = SlowHsm(resources.hsm, 0.0)
    narrow = dataclasses.replace(
        resources,
        engine=engine,
        sessions=session_factory(engine),
        hsm=slow,
    )
    transport = httpx.ASGITransport(app=create_app(narrow.settings, narrow))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
        staff = await staff_headers(api, "clerk", Role.auditor)
        counter = await staff_headers(api, "counter", Role.counter_operator)
        terminals = [host(api, t) for t in world.bus_terminals + world.taxi_terminals]
        for terminal in terminals:
            await terminal.sign_in()
        slow.delay = 0.5
        pending: list[asyncio.Task[httpx.Response]] = [
            asyncio.create_task(terminal.get(f"{BLACKLIST}?since=0")) for terminal in terminals
        ]
        # A staff route that asks the HSM (the resident's ID is indexed and encrypted) too.
        resident = {
            "resident_id": resident_id(),
            "name": "张三",
            "phone": "13800000000",
            "address": "x",
        }
        pending.append(asyncio.create_task(api.post(RESIDENTS, json=resident, headers=counter)))
        await asyncio.sleep(0.1)  # every one of them is waiting for the HSM now
        answered: list[tuple[str, int]] = []
        requests: list[tuple[str, Callable[[], Awaitable[httpx.Response]]]] = [
            ("health", lambda: api.get("/healthz")),
            ("staff me", lambda: api.get("/api/v1/staff/me", headers=staff)),
            ("audit", lambda: api.get("/api/v1/audit", headers=staff)),
            ("blacklist", lambda: api.get("/api/v1/blacklist", headers=staff)),
        ]
        for name, send in requests:
            response = await send()
            answered.append((name, response.status_code))
            assert not any(task.done() for task in pending), f"{name} waited for the HSM"
        results = await asyncio.gather(*pending)
    await engine.dispose()
    assert answered == [(name, 200) for name, _ in requests]
    assert [r.status_code for r in results] == [200] * len(terminals) + [201]
