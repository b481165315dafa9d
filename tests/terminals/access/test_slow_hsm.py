"""No database connection or lock is held while the HSM works.

With an HSM that answers in 500 ms and a pool of two connections, routes that need no HSM
(health, staff reads) answer while terminal requests, a purse load, an upload and a resident
registration still wait for the HSM (a held connection would make them wait too). And request by
request, at every HSM command of every route that asks one, no connection is checked out."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from cardsvc.app import create_app
from cardsvc.db import create_engine, session_factory
from cardsvc.hsm import HsmClient
from cardsvc.reader.link import InProcessLink
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from terminals.devices.card import make_blank_card
from terminals.devices.counter_load import CounterLoadTerminal
from terminals.registry.models import MerchantCategory, TerminalKind
from tests.factories import (
    World,
    build_registry,
    issue_cards,
    make_card,
    make_site,
    resident_id,
    staff_headers,
)
from tests.issuance.flow import personalize_over_api
from tests.terminals.helpers import bus, host, signed_in, tap

BLACKLIST = "/api/v1/terminal/lists/blacklist"
RESIDENTS = "/api/v1/residents"
ACCOUNTS = "/api/v1/accounts"


class Checkouts:
    """How many of an engine's connections are checked out right now."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.now = 0

        @event.listens_for(engine.sync_engine, "checkout")
        def _out(*_args: Any) -> None:
            self.now += 1

        @event.listens_for(engine.sync_engine, "checkin")
        def _in(*_args: Any) -> None:
            self.now -= 1


class SlowHsm:
    """Every call waits ``delay`` seconds, and while ``gate`` is cleared until it is set again,
    before the real HSM answers; each call is noted with the connections checked out when it
    began."""

    def __init__(self, inner: HsmClient, delay: float, checkouts: Checkouts) -> None:
        self._inner = inner
        self._checkouts = checkouts
        self.delay = delay
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._inner, name)

        async def slowly(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, self._checkouts.now))
            await asyncio.sleep(self.delay)
            await self.gate.wait()
            return await call(*args, **kwargs)

        return slowly


@dataclasses.dataclass
class Narrow:
    """The API on a pool of two connections and the slow HSM."""

    api: httpx.AsyncClient
    hsm: SlowHsm
    resources: Resources


async def narrow_api(resources: Resources, run: Callable[[Narrow], Awaitable[None]]) -> None:
    engine = create_engine(resources.settings.database_url, pool_size=2)
    checkouts = Checkouts(engine)
    slow = SlowHsm(resources.hsm, 0.0, checkouts)
    narrow = dataclasses.replace(
        resources, engine=engine, sessions=session_factory(engine), hsm=slow
    )
    transport = httpx.ASGITransport(app=create_app(narrow.settings, narrow))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
            await run(Narrow(api, slow, narrow))
    finally:
        await engine.dispose()


async def test_a_slow_hsm_holds_no_connection(resources: Resources) -> None:
    world = await build_registry(resources, buses=2, taxis=2)
    counter = await make_site(resources, 101, MerchantCategory.retail, TerminalKind.counter)
    riders = await issue_cards(resources, [501, 502], balance=5000)
    chip = next(iter((await issue_cards(resources, [503], balance=0)).values()))

    async def run(n: Narrow) -> None:
        api = n.api
        staff = await staff_headers(api, "clerk", Role.auditor)
        operator = await staff_headers(api, "counter", Role.counter_operator)
        validator = await bus(api, world.bus_terminals[0])  # signs in, fetches its lists
        terminals = [host(api, t) for t in world.bus_terminals[1:] + world.taxi_terminals]
        for terminal in terminals:
            await terminal.sign_in()
        for rider in riders.values():
            tap(validator, rider)
        desk = CounterLoadTerminal(await signed_in(api, counter))

        async def load() -> str:
            with InProcessLink(chip) as link:
                return (await desk.load(link, 2_000)).status

        # The HSM answers nothing until the requests below are answered, however busy the machine.
        n.hsm.gate.clear()
        calls_before = len(n.hsm.calls)
        resident = {
            "resident_id": resident_id(),
            "name": "张三",
            "phone": "13800000000",
            "address": "x",
        }
        pending: list[asyncio.Task[Any]] = [
            *(asyncio.create_task(t.get(f"{BLACKLIST}?since=0")) for t in terminals),
            # A staff route that asks the HSM too (the resident's ID is indexed and encrypted).
            asyncio.create_task(api.post(RESIDENTS, json=resident, headers=operator)),
            asyncio.create_task(load()),  # MAC1/MAC2, then the TAC of the confirmation
            asyncio.create_task(validator.upload()),  # the batch's TACs
        ]
        deadline = time.monotonic() + 30
        while len(n.hsm.calls) - calls_before < len(pending):  # each is waiting for the HSM now
            assert time.monotonic() < deadline, "a request never reached the HSM"
            await asyncio.sleep(0.01)
        answered: list[tuple[str, int]] = []
        requests: list[tuple[str, Callable[[], Awaitable[httpx.Response]]]] = [
            ("health", lambda: api.get("/healthz")),
            ("staff me", lambda: api.get("/api/v1/staff/me", headers=staff)),
            ("audit", lambda: api.get("/api/v1/audit", headers=staff)),
            ("blacklist", lambda: api.get("/api/v1/blacklist", headers=staff)),
        ]
        for name, send in requests:
            # Were a connection held across an HSM call, the pool of two would never serve this.
            response = await asyncio.wait_for(send(), timeout=30)
            answered.append((name, response.status_code))
            assert not any(task.done() for task in pending), f"{name} waited for the HSM"
        n.hsm.gate.set()
        results = await asyncio.gather(*pending)
        assert answered == [(name, 200) for name, _ in requests]
        lists, registered = results[: len(terminals)], results[len(terminals)]
        assert [r.status_code for r in lists] == [200] * len(terminals)
        assert registered.status_code == 201
        assert results[-2] == "confirmed"
        assert [r["code"] for answer in results[-1] for r in answer["results"]] == ["00", "00"]

    await narrow_api(resources, run)


async def test_no_connection_is_checked_out_while_the_hsm_works(
    resources: Resources, world: World
) -> None:
    """One request at a time, so every checked-out connection would be the asking request's."""
    counter = await make_site(resources, 101, MerchantCategory.retail, TerminalKind.counter)
    riders = await issue_cards(resources, [504], balance=5000)
    chip = next(iter((await issue_cards(resources, [505], balance=0)).values()))
    holder = await make_card(resources, 43)

    async def run(n: Narrow) -> None:
        api = n.api
        operator = await staff_headers(api, "counter", Role.counter_operator)
        auditor = await staff_headers(api, "auditor", Role.auditor)
        validator = await bus(api, world.bus_terminals[0])  # sign-in and lists
        tap(validator, riders[next(iter(riders))])
        assert [r["code"] for a in await validator.upload() for r in a["results"]] == ["00"]
        pin_pad = await signed_in(api, counter)
        desk = CounterLoadTerminal(pin_pad)
        with InProcessLink(chip) as link:
            assert (await desk.load(link, 1_500)).status == "confirmed"
        # The online account: its PIN set at the counter, a deposit, a withdrawal with the PIN.
        found = await api.post(ACCOUNTS + "/lookup", json={"card_no": holder.card_no},
                               headers=operator)  # fmt: skip
        account = f"{ACCOUNTS}/{found.json()['reference']}"
        pin = {
            "card_no": holder.card_no,
            "terminal_no": counter.terminal_no,
            "pin_block": pin_pad.pin_block("482915", holder.card_no),
        }
        assert (await api.post(f"{account}/pin", json=pin, headers=operator)).is_success
        cash = {"counter_code": "DESK01", "receipt_no": "R-1", "amount": 500}
        assert (await api.post(f"{account}/deposits", json=cash, headers=operator)).is_success
        out = {**cash, "receipt_no": "R-2", "amount": 200, **pin}
        assert (await api.post(f"{account}/withdrawals", json=out, headers=operator)).is_success
        body = {
            "resident_id": resident_id(),
            "name": "李四",
            "phone": "13800000000",
            "address": "y",
        }
        created = await api.post(RESIDENTS, json=body, headers=operator)
        assert created.status_code == 201
        resident = created.json()["id"]
        lookup = {"resident_id": body["resident_id"]}
        assert (await api.post(f"{RESIDENTS}/lookup", json=lookup, headers=operator)).is_success
        revealed = await api.get(f"{RESIDENTS}/{resident}?reveal=true", headers=operator)
        assert revealed.json()["resident_id"] == body["resident_id"]
        applied = await api.post(
            "/api/v1/applications", json={"resident_id": resident}, headers=operator
        )
        assert applied.status_code == 201
        # Its card personalized by the session API: challenges, key blocks, MACs and the proof.
        application = applied.json()["id"]
        supervisor = await staff_headers(api, "supervisor", Role.supervisor)
        approved = await api.post(f"/api/v1/applications/{application}/approve", headers=supervisor)
        assert approved.is_success
        with InProcessLink(make_blank_card(bytes.fromhex("5105000000000001"))) as link:
            turn = await personalize_over_api(api, operator, link, application)
        assert turn["state"] == "done"
        audited = await api.get("/api/v1/audit/verify", headers=auditor)  # seals, then proves
        assert audited.json()["ok"] is True
        asked = {name for name, _ in n.hsm.calls}
        assert {"mac_verify", "tac_verify", "load_authorize", "data_decrypt", "pin_verify",
                "pin_offset_generate", "audit_checkpoint", "audit_verify", "perso_auth",
                "perso_mac", "card_keys_export"} <= asked  # fmt: skip
        held = [(name, count) for name, count in n.hsm.calls if count]
        assert not held, f"connections checked out while the HSM worked: {held}"

    await narrow_api(resources, run)
