"""Field devices (gray records, fares), the registry's admin API, the clearing day."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from click.testing import CliRunner

from cardsvc.audit import repository as audit
from cardsvc.cards.models import CardType
from cardsvc.cli import main
from cardsvc.db import unit_of_work
from cardsvc.reader.link import InProcessLink
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from terminals.devices.bus import BusValidator
from terminals.devices.psam import Psam
from terminals.devices.taxi import TaxiMeter
from terminals.devices.validator import TapRefused
from terminals.registry import repository as registry_repository
from terminals.registry.models import TerminalKind
from tests.factories import World, issue_cards, staff_headers
from tests.terminals.helpers import host


async def _bus(client: httpx.AsyncClient, terminal: str, line: str) -> BusValidator:
    device = BusValidator(host(client, terminal), Psam.dev(terminal), line=line)
    await device.start()
    return device


async def test_gray_record_is_recovered_on_the_next_tap(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    chips = await issue_cards(resources, [1], balance=1000)
    chip = next(iter(chips.values()))
    device = await _bus(client, world.bus_terminals[0], "0001")
    with InProcessLink(chip) as link, pytest.raises(TapRefused, match="gray"):
        device.tap(link, tear=True)
    assert chip.state.balance == 800  # the card did debit before it was pulled
    assert device.state.pending[0]["gray"] is True
    with InProcessLink(chip) as link:
        result = device.tap(link)
    assert result.recovered is not None
    assert result.recovered["tac"]
    assert [r["gray"] for r in device.state.pending] == [False, False]
    answers = await device.upload()
    assert [r["code"] for r in answers[0]["results"]] == ["00", "00"]
    assert answers[0]["accepted_amount"] == 1000 - chip.state.balance


async def test_uploaded_gray_record_is_held(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    chips = await issue_cards(resources, [1], balance=1000)
    chip = next(iter(chips.values()))
    device = await _bus(client, world.bus_terminals[0], "0001")
    with InProcessLink(chip) as link, pytest.raises(TapRefused):
        device.tap(link, tear=True)
    answers = await device.upload()
    assert [r["code"] for r in answers[0]["results"]] == ["04"]
    assert answers[0]["ledger_transaction_id"] is None


async def test_concessions_and_transfer_discount(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    students = await issue_cards(resources, [1], balance=1000, card_type=CardType.student)
    seniors = await issue_cards(resources, [2], balance=1000, card_type=CardType.senior)
    adults = await issue_cards(resources, [3], balance=1000)
    a = await _bus(client, world.bus_terminals[0], "0001")
    b = await _bus(client, world.bus_terminals[1], "0002")
    (student,), (senior,), (adult,) = students.values(), seniors.values(), adults.values()
    with InProcessLink(student) as link:
        assert a.tap(link).amount == 100  # 200 at 50 %
    with InProcessLink(senior) as link:
        assert a.tap(link).amount == 0  # free
    with InProcessLink(adult) as link:
        first = a.tap(link)
    with InProcessLink(adult) as link:
        second = b.tap(link)  # line 0002 costs 300; transfer from 0001 within 90 minutes: -100
    with InProcessLink(adult) as link:
        third = b.tap(link)  # same line again: no transfer
    assert (first.amount, second.amount, third.amount) == (200, 200, 300)
    assert second.record["compound"]["transfer"] is True
    answers = await a.upload() + await b.upload()
    assert {r["code"] for ans in answers for r in ans["results"]} == {"00"}


async def test_taxi_fare(client: httpx.AsyncClient, world: World, resources: Resources) -> None:
    chips = await issue_cards(resources, [1], balance=5000)
    meter = TaxiMeter(host(client, world.taxi_terminals[0]), Psam.dev(world.taxi_terminals[0]))
    await meter.start()
    assert meter.trip_fare(3000) == 1000
    assert meter.trip_fare(3001) == 1240
    assert meter.trip_fare(5500, waiting_min=2) == 1000 + 3 * 240 + 100
    with InProcessLink(next(iter(chips.values()))) as link:
        assert meter.pay(link, distance_m=4200).record["tx_type"] == 6
    assert [r["code"] for r in (await meter.upload())[0]["results"]] == ["00"]


async def test_registry_admin_api(client: httpx.AsyncClient, resources: Resources) -> None:
    admin = await staff_headers(client, "admin1", Role.administrator)
    clerk = await staff_headers(client, "clerk1", Role.counter_operator)
    merchant = {"merchant_no": "321100000000077", "name": "Parking Co.", "category": "parking",
                "settlement_account": "6222000099990000"}  # fmt: skip
    assert (await client.post("/api/v1/merchants", json=merchant, headers=clerk)).status_code == 403
    assert (await client.post("/api/v1/merchants", json=merchant)).status_code == 401
    created = await client.post("/api/v1/merchants", json=merchant, headers=admin)
    assert created.status_code == 201
    assert created.json()["category"] == "parking"
    assert (await client.post("/api/v1/merchants", json=merchant, headers=admin)).status_code == 409
    bad = dict(merchant, merchant_no="3211")
    assert (await client.post("/api/v1/merchants", json=bad, headers=admin)).status_code == 422
    terminal = {
        "terminal_no": "321100000777",
        "psam_no": "5032110000077700",
        "merchant_no": "321100000000077",
    }
    made = await client.post("/api/v1/terminals", json=terminal, headers=admin)
    assert made.status_code == 201
    assert (made.json()["status"], made.json()["kind"]) == ("active", "pos")
    clash = dict(terminal, terminal_no="321100000778")
    assert (await client.post("/api/v1/terminals", json=clash, headers=admin)).status_code == 409
    changed = await client.post(
        "/api/v1/terminals/321100000777/status", json={"status": "suspended"}, headers=admin
    )
    assert changed.json()["status"] == "suspended"
    kiosk = await client.post(
        "/api/v1/terminals/321100000777/kind", json={"kind": "kiosk"}, headers=admin
    )
    assert kiosk.json()["kind"] == "kiosk"
    for body, status in (({"kind": "atm"}, 422), ({"kind": "counter"}, 403)):
        refused = await client.post(
            "/api/v1/terminals/321100000777/kind",
            json=body,
            headers=clerk if status == 403 else admin,
        )
        assert refused.status_code == status
    async with resources.sessions() as s:
        trail = await audit.list_entries(s, entity="terminal", entity_id="321100000777")
    assert [
        (e.actor, json.loads(e.before or "{}"), json.loads(e.after or "{}"))
        for e in trail
        if e.action == "terminal.kind"
    ] == [("admin1", {"kind": "pos"}, {"kind": "kiosk"})]
    listed = await client.get(
        "/api/v1/terminals", params={"merchant_no": "321100000000077"}, headers=admin
    )
    assert [t["terminal_no"] for t in listed.json()] == ["321100000777"]
    put = await client.put(
        "/api/v1/parameters/parking/P1", json={"value": {"first_hour": 500}}, headers=admin
    )
    assert put.status_code == 200
    assert put.json()["version"] >= 1
    assert (
        await client.put("/api/v1/parameters/nope/P1", json={"value": {"a": 1}}, headers=admin)
    ).status_code == 422


async def test_lists_are_served_as_deltas(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    device = await _bus(client, world.bus_terminals[0], "0001")
    version = device.state.params_version
    async with unit_of_work(resources.sessions) as session:
        from terminals.lists import service as lists

        await lists.set_parameter(session, "fares", "bus:default", {"fare": 250}, actor="test")
        await lists.delete_parameter(session, "fares", "bus:0002", actor="test")
    delta = await device.host.get(f"/api/v1/terminal/lists/parameters?since={version}")
    body = delta.json()
    assert body["mode"] == "delta"
    assert [e["action"] for e in body["entries"]] == ["set", "delete"]
    await device.refresh_lists()
    assert device.param("fares", "bus:default", "fare", 0) == 250
    assert "bus:0002" not in device.state.params["fares"]


async def test_registry_by_cli(cli_env: None, resources: Resources) -> None:
    async def cardsvc(*args: str) -> str:
        result = await asyncio.to_thread(CliRunner().invoke, main, list(args))
        assert result.exit_code == 0, result.output
        return result.stdout

    await cardsvc("merchants", "add", "321100000000088", "Service Centre", "--category", "retail",
                  "--account", "6222000099990088")  # fmt: skip
    added = await cardsvc("terminals", "add", "321100000888", "--psam", "5032110000088800",
                          "--merchant", "321100000000088", "--kind", "counter")  # fmt: skip
    assert "(counter)" in added
    await cardsvc("terminals", "kind", "321100000888", "kiosk")
    listed = await cardsvc("terminals", "list")
    assert "321100000888" in listed
    assert " kiosk " in listed
    async with resources.sessions() as s:
        terminal = await registry_repository.terminal_by_no(s, "321100000888")
    assert terminal is not None
    assert terminal.kind is TerminalKind.kiosk
    refused = await asyncio.to_thread(
        CliRunner().invoke, main, ["terminals", "kind", "321100000888", "atm"]
    )
    assert refused.exit_code == 2  # not a kind: click refuses before anything runs
