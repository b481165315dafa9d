"""One card's day: a counter loads it, a bus debits it, it parks (entry and exit) and pays fuel
from the holder's online account. Run over the in-process link and through pcscd (``pcsc``):
the card, the ledger and the records must agree at the end."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.resources import Resources
from terminals.devices.bus import BusValidator
from terminals.devices.card import make_dev_personalized_card
from terminals.devices.counter_load import CounterLoadTerminal
from terminals.devices.fuel import FuelPump
from terminals.devices.parking import ParkingTerminal
from terminals.devices.psam import Psam
from terminals.devices.validator import LOCAL_TZ
from terminals.registry.models import MerchantCategory
from tests.conftest_pcsc import Connect
from tests.factories import PIN, Site, make_card, make_site
from tests.terminals.helpers import balance, signed_in


async def test_load_bus_parking_fuel_agree(
    resources: Resources,
    client: httpx.AsyncClient,
    counter: Site,
    parking: Site,
    pump: Site,
    connect: Connect,
) -> None:
    bus_site = await make_site(resources, 501, MerchantCategory.bus)
    db_card = await make_card(resources, 41, account=50_000)
    card = make_dev_personalized_card(db_card.card_no, 0)

    desk = CounterLoadTerminal(await signed_in(client, counter))
    bus = BusValidator(await signed_in(client, bus_site), Psam.dev(bus_site.terminal_no))
    now = datetime.now(LOCAL_TZ).replace(microsecond=0)
    wall = {"now": now - timedelta(hours=2, minutes=30)}
    gate = ParkingTerminal(
        await signed_in(client, parking),
        Psam.dev(parking.terminal_no),
        lot="0007",
        clock=lambda: wall["now"],
    )
    await bus.start()
    await gate.start()
    pumps = FuelPump(await signed_in(client, pump), price_per_litre=780)

    with connect(card) as link:
        loaded = await desk.load(link, 10_000)
    assert loaded.status == "confirmed"
    with connect(card) as link:
        ride = bus.tap(link)
    with connect(card) as link:
        gate.gate = "entry"
        entry = gate.tap(link)
    with connect(card) as link:
        gate.gate = "exit"
        wall["now"] = now
        leave = gate.tap(link)
    with connect(card) as link:
        preauth, completion = await pumps.fuel(link, max_amount=30_000, millilitres=25_340, pin=PIN)

    assert (ride.amount, entry.amount, leave.amount) == (
        200,
        0,
        1_500,
    )  # 2 h 30 min: 3 started hours
    assert preauth.approved
    assert completion is not None
    assert completion.approved
    fuel = completion.approved_amount
    assert fuel == 19_765  # 25.34 l at 7.80 yuan, rounded half up
    assert card.state.balance == 10_000 - 200 - 1_500

    uploads = await bus.upload() + await gate.upload()
    assert [(u["accepted_count"], u["accepted_amount"], u["refused_count"]) for u in uploads] == [
        (1, 200, 0),
        (2, 1_500, 0),
    ]

    # The purse on the card = its float in the ledger; each merchant has what its records say.
    assert await balance(resources, AccountKind.card_float, db_card.card_no) == card.state.balance
    assert await balance(resources, AccountKind.counter_cash, counter.terminal_no) == 10_000
    assert await balance(resources, AccountKind.merchant_pending, bus_site.merchant_no) == 200
    assert await balance(resources, AccountKind.merchant_pending, parking.merchant_no) == 1_500
    assert await balance(resources, AccountKind.merchant_pending, pump.merchant_no) == fuel
    assert (
        await balance(resources, AccountKind.resident_account, str(db_card.resident_id))
        == 50_000 - fuel
    )
    async with resources.sessions() as s:
        report = await ledger.check_invariants(s)
    assert report.ok, report.render()
