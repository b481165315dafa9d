"""Offline uploads: a simulated day end to end, and every refusal code on its own record."""

from __future__ import annotations

import copy
import dataclasses
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cardsvc.blacklist import service as blacklist
from cardsvc.breaks.models import BreakItem, BreakKind, BreakStatus
from cardsvc.cards.models import CardType
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.ledger.schemas import AccountRef
from cardsvc.reader.link import InProcessLink
from cardsvc.resources import Resources
from terminals.devices.bus import BusValidator
from terminals.devices.card import VirtualCard
from terminals.devices.psam import Psam
from terminals.devices.taxi import TaxiMeter
from terminals.devices.validator import TapRefused
from terminals.uploads.models import OfflineRecord
from tests.factories import BUS_MERCHANT, TAXI_MERCHANT, World, card_no, issue_cards
from tests.terminals.helpers import bus, float_balance, host, tap

UPLOADS = "/api/v1/terminal/uploads"


async def test_a_simulated_day(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    chips = await issue_cards(resources, list(range(1, 25)), balance=5000)
    chips |= await issue_cards(
        resources, list(range(100, 106)), balance=3000, card_type=CardType.student
    )
    start = {no: chip.state.balance for no, chip in chips.items()}
    bus_a = await bus(client, world.bus_terminals[0], "0001")
    bus_b = await bus(client, world.bus_terminals[1], "0002")
    taxis = []
    for t in world.taxi_terminals:
        meter = TaxiMeter(host(client, t), Psam.dev(t))
        await meter.start()
        taxis.append(meter)
    paid: dict[str, int] = dict.fromkeys(chips, 0)
    for round_no in range(3):
        for i, (no, chip) in enumerate(chips.items()):
            result = tap(bus_a if (i + round_no) % 2 == 0 else bus_b, chip)
            paid[no] += result.amount
            if i % 5 == round_no:
                with InProcessLink(chip) as link:
                    trip = taxis[i % 2].pay(link, distance_m=2500 + 300 * (i % 10))
                paid[no] += trip.amount
    # A student pays half; a transfer from line 0001 to 0002 within 90 minutes takes 100 off.
    student = card_no(100)
    assert 0 < paid[student] < paid[card_no(100 + 1)] * 3
    answers = []
    for device in (bus_a, bus_b, *taxis):
        answers += await device.upload(max_records=20)
    codes = [r["code"] for a in answers for r in a["results"]]
    assert codes
    assert set(codes) == {"00"}
    accepted = sum(a["accepted_amount"] for a in answers)
    fallen = sum(start[no] - chip.state.balance for no, chip in chips.items())
    assert accepted == fallen == sum(paid.values())
    for no, chip in chips.items():
        assert await float_balance(resources, no) == chip.state.balance
    async with resources.sessions() as session:
        report = await ledger.check_invariants(session)
        assert report.ok, report.render()
        bus_pending = await ledger.balance(
            session, AccountRef(AccountKind.merchant_pending, BUS_MERCHANT)
        )
        taxi_pending = await ledger.balance(
            session, AccountRef(AccountKind.merchant_pending, TAXI_MERCHANT)
        )
        assert bus_pending + taxi_pending == accepted
        assert taxi_pending > 0
        assert bus_pending > 0
        # Devices upload in their own order, so gaps open and close again: none stays open.
        open_breaks = (
            select(func.count()).select_from(BreakItem).where(BreakItem.status == BreakStatus.open)
        )
        assert (await session.execute(open_breaks)).scalar_one() == 0
        stored = (
            await session.execute(select(func.count()).select_from(OfflineRecord))
        ).scalar_one()
        assert stored == len(codes)


def _batch(batch_no: int, psam: str, records: list[Any]) -> dict[str, Any]:
    return {
        "batch_no": batch_no,
        "psam_no": psam,
        "record_count": len(records),
        "total_amount": sum(
            r["amount"] for r in records if isinstance(r, dict) and type(r.get("amount")) is int
        ),
        "blacklist_version": 0,
        "params_version": 0,
        "records": records,
    }


async def test_each_refusal_gets_its_code_and_nothing_else_is_lost(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    chips = await issue_cards(resources, [1, 2, 3, 4, 5], balance=2000)
    nos = list(chips)
    device = await bus(client, world.bus_terminals[0])
    genuine = [tap(device, chips[no]).record for no in nos]
    device.state.pending.clear()
    async with unit_of_work(resources.sessions) as session:
        await blacklist.add(session, asn=nos[4], reason="lost", actor="test")
    tampered = dict(genuine[1], tac="00000000")
    future = dict(genuine[2], datetime="20990101080000")
    ancient = dict(genuine[2], datetime="20000101080000", terminal_serial=999_001)
    stranger = dict(genuine[2], asn="3211999999999991", offline_counter=7, terminal_serial=999_002)
    foreign = dict(genuine[2], terminal_no=world.bus_terminals[1], terminal_serial=999_003)
    malformed = [
        dict(genuine[3], asn="32X1"),
        dict(
            genuine[3],
            amount=genuine[3]["balance_before"] + 1,
            fare=genuine[3]["balance_before"] + 1,
        ),
        dict(genuine[3], datetime="20250230120000"),
        {k: v for k, v in genuine[3].items() if k != "tac"},
        dict(genuine[3], surprise=1),
        "not an object",
    ]
    gray = dict(
        genuine[3],
        gray=True,
        tac=None,
        offline_counter=genuine[3]["offline_counter"] + 1,
        terminal_serial=999_004,
    )
    records = [genuine[0], tampered, genuine[1], copy.deepcopy(genuine[0]), future, ancient, stranger, foreign,
               *malformed, gray, genuine[2], genuine[3], genuine[4]]  # fmt: skip
    payload = _batch(1, device.host.psam_no, records)
    before = {no: await float_balance(resources, no) for no in nos}
    response = await device.host.post(UPLOADS, payload)
    assert response.status_code == 200, response.text
    answer = response.json()
    codes = [r["code"] for r in answer["results"]]
    assert codes == [
        "00",
        "01",
        "00",
        "03",
        "02",
        "05",
        "06",
        "07",
        *["02"] * 6,
        "04",
        "00",
        "00",
        "00",
    ]
    assert answer["results"][-1]["blacklisted"] is True
    assert answer["results"][0]["blacklisted"] is False
    assert answer["accepted_amount"] == sum(r["amount"] for r in genuine)
    for no, record in zip(nos, genuine, strict=True):
        assert await float_balance(resources, no) == before[no] - record["amount"]
    async with resources.sessions() as session:
        rows = (
            (await session.execute(select(OfflineRecord).order_by(OfflineRecord.position)))
            .scalars()
            .all()
        )
        assert [r.result_code for r in rows] == codes
        assert rows[1].raw is not None
        # Every record carries its upload's clearing date, refused ones too (the day's files).
        assert (
            rows[0].clearing_date
            == rows[1].clearing_date
            == date.fromisoformat(answer["clearing_date"])
        )
        breaks = (await session.execute(select(BreakItem).order_by(BreakItem.id))).scalars().all()
        position = {r.id: r.position for r in rows}
        assert sorted((position[b.source_id or 0], b.kind, b.status) for b in breaks) == [
            (1, BreakKind.tac_failed, BreakStatus.open),
            # Refused 02 for an unknown field, yet its TAC verifies: the card paid.
            (12, BreakKind.refused_paid, BreakStatus.open),
            (14, BreakKind.gray, BreakStatus.open),
        ]
        report = await ledger.check_invariants(session)
        assert report.ok, report.render()
    # The same batch again: the first answer, nothing posted twice.
    again = await device.host.post(UPLOADS, payload)
    assert again.status_code == 200
    assert again.json() == answer
    for no, record in zip(nos, genuine, strict=True):
        assert await float_balance(resources, no) == before[no] - record["amount"]
    # The same batch number with other content is a conflict.
    other = await device.host.post(UPLOADS, _batch(1, device.host.psam_no, records[:3]))
    assert other.status_code == 409
    # Those records in a later batch are duplicates now.
    later = await device.host.post(
        UPLOADS, _batch(2, device.host.psam_no, [genuine[0], genuine[2]])
    )
    assert [r["code"] for r in later.json()["results"]] == ["03", "03"]
    assert later.json()["ledger_transaction_id"] is None


async def test_psam_mismatch_and_bad_headers(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    chips = await issue_cards(resources, [1], balance=1000)
    device = await bus(client, world.bus_terminals[0])
    record = tap(device, next(iter(chips.values()))).record
    wrong = await device.host.post(UPLOADS, _batch(1, "5099999999999900", [record]))
    assert [r["code"] for r in wrong.json()["results"]] == ["07"]
    bad_count = dict(_batch(2, device.host.psam_no, [record]), record_count=2)
    assert (await device.host.post(UPLOADS, bad_count)).status_code == 422
    bad_total = dict(_batch(3, device.host.psam_no, [record]), total_amount=record["amount"] + 1)
    assert (await device.host.post(UPLOADS, bad_total)).status_code == 422
    good = await device.host.post(UPLOADS, _batch(4, device.host.psam_no, [record]))
    assert [r["code"] for r in good.json()["results"]] == ["00"]


async def test_counter_gaps_open_and_later_records_close_them(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    chips = await issue_cards(resources, [1], balance=3000)
    chip = next(iter(chips.values()))
    a = await bus(client, world.bus_terminals[0])
    b = await bus(client, world.bus_terminals[1], "0002")
    tap(a, chip)
    tap(b, chip)  # counter 1 stays on b for now
    tap(a, chip)
    await a.upload()  # counters 0 and 2: counter 1 is missing
    async with resources.sessions() as session:
        gaps = (await session.execute(select(BreakItem))).scalars().all()
        assert [(g.kind, g.counter, g.status) for g in gaps] == [
            (BreakKind.counter_gap, 1, BreakStatus.open)
        ]
    await b.upload()
    async with resources.sessions() as session:
        gaps = (await session.execute(select(BreakItem))).scalars().all()
        assert [(g.counter, g.status) for g in gaps] == [(1, BreakStatus.resolved)]


async def test_short_float_goes_to_suspense(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    """The card paid (its TAC proves it) but its float is short: the difference is suspense."""
    chips = await issue_cards(resources, [1], balance=0)
    # The chip holds money the ledger never saw (say, a load booked nowhere).
    richer = VirtualCard(dataclasses.replace(next(iter(chips.values())).state, balance=1000))
    device = await bus(client, world.bus_terminals[0])
    record = tap(device, richer).record
    response = await device.host.post(UPLOADS, _batch(1, device.host.psam_no, [record]))
    assert [r["code"] for r in response.json()["results"]] == ["00"]
    async with resources.sessions() as session:
        assert (
            await ledger.balance(session, AccountRef(AccountKind.suspense_short))
            == -record["amount"]
        )
        assert (await ledger.check_invariants(session)).ok


@pytest.mark.parametrize("refused", ["blocked", "blacklisted"])
async def test_blacklisted_cards_are_refused_and_blocked(
    client: httpx.AsyncClient, world: World, resources: Resources, refused: str
) -> None:
    chips = await issue_cards(resources, [1], balance=1000)
    no, chip = next(iter(chips.items()))
    async with unit_of_work(resources.sessions) as session:
        await blacklist.add(session, asn=no, reason="lost", actor="test")
    device = await bus(client, world.bus_terminals[0])
    assert no in device.state.blacklist
    with pytest.raises(TapRefused, match="blacklist"):
        tap(device, chip)
    # The card is now blocked on the chip itself: any terminal refuses it, even without the list.
    other = await bus(client, world.bus_terminals[1])
    other.state.blacklist.clear()
    with pytest.raises(TapRefused, match="blocked"):
        tap(other, chip)
    assert chip.state.balance == 1000


async def test_refused_records_that_paid_leave_a_break(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    """Records refused 02 (time in the future), 05 (too old) and 07 (PSAM mismatch) whose TAC
    verifies: the chip paid, so each opens a refused_paid break with its amount, card, terminal
    and clearing date; nothing is booked, and sending a record again opens no second break."""
    from datetime import timedelta

    from cardsvc import clock
    from cardsvc.breaks import service as breaks

    chips = await issue_cards(resources, [1, 2, 3], balance=2000)
    (no1, chip1), (no2, chip2), (no3, chip3) = chips.items()
    terminal = world.bus_terminals[0]
    now = clock.now()
    ahead = BusValidator(host(client, terminal), Psam.dev(terminal),
                         clock=lambda: now + timedelta(hours=2))  # fmt: skip
    old = BusValidator(host(client, terminal), Psam.dev(terminal),
                       clock=lambda: now - timedelta(days=40))  # fmt: skip
    device = await bus(client, terminal)
    future, ancient, genuine = (
        tap(ahead, chip1).record,
        tap(old, chip2).record,
        tap(device, chip3).record,
    )
    answer = await device.host.post(UPLOADS, _batch(1, device.host.psam_no, [future, ancient]))
    mismatch = await device.host.post(UPLOADS, _batch(2, "5099999999999900", [genuine]))
    assert [r["code"] for r in answer.json()["results"]] == ["02", "05"]
    assert [r["code"] for r in mismatch.json()["results"]] == ["07"]
    again = await device.host.post(UPLOADS, _batch(3, "5099999999999900", [genuine]))
    assert [r["code"] for r in again.json()["results"]] == ["07"]
    async with resources.sessions() as session:
        found = await breaks.list_breaks(session, kind=BreakKind.refused_paid)
    day = answer.json()["clearing_date"]
    assert [(b.asn, b.amount, b.counter, b.terminal_no, str(b.clearing_date)) for b in found] == [
        (no1, future["amount"], future["offline_counter"], terminal, day),
        (no2, ancient["amount"], ancient["offline_counter"], terminal, day),
        (no3, genuine["amount"], genuine["offline_counter"], terminal, day),
    ]
    assert [b.reason[:11] for b in found] == ["refused 02 ", "refused 05 ", "refused 07 "]
    for no, chip in chips.items():
        assert await float_balance(resources, no) == 2000 != chip.state.balance


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("record_count", "1"),
        ("record_count", 1.0),
        ("batch_no", True),
        ("total_amount", 10**30),
        ("blacklist_version", 10**30),
        ("params_version", -1),
        ("surprise", 1),
    ],
)
async def test_the_upload_header_is_as_strict_as_its_records(
    client: httpx.AsyncClient, world: World, resources: Resources, field: str, value: Any
) -> None:
    chips = await issue_cards(resources, [1], balance=1000)
    device = await bus(client, world.bus_terminals[0])
    record = tap(device, next(iter(chips.values()))).record
    bad = {**_batch(1, device.host.psam_no, [record]), field: value}
    response = await device.host.post(UPLOADS, bad)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "RequestValidationFailed"
    assert [error["loc"] for error in response.json()["fields"]] == [["body", field]]
    good = await device.host.post(UPLOADS, _batch(1, device.host.psam_no, [record]))
    assert [r["code"] for r in good.json()["results"]] == ["00"]
