"""Demo step: a simulated bus and taxi day and its upload (``cardsvc demo``).

Registers a bus company and a taxi company with two buses and one taxi, and a card sales desk
(once), issues a handful of cards for the day (numbers from the card sequence, so the demo can
run again), loads each purse with cash at the desk (the online load over the signed terminal
API: MAC1, MAC2, TAC), lets the validators and the meter take fares through the virtual cards and
their PSAMs, uploads the batches over the signed terminal API, and checks the ledger.
"""

from __future__ import annotations

import secrets
import time
from datetime import date

import click
import httpx

from cardsvc import clock
from cardsvc.cards import repository as cards_repository
from cardsvc.cards.models import CONCESSION_CODES, Card, CardStatus, CardType
from cardsvc.cards.numbers import make_card_no
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.ledger.schemas import AccountRef
from cardsvc.reader.link import InProcessLink
from cardsvc.residents.models import Resident
from cardsvc.resources import Resources
from terminals.devices.bus import BusValidator
from terminals.devices.card import VirtualCard, make_dev_personalized_card
from terminals.devices.counter_load import CounterLoadTerminal
from terminals.devices.host_client import HostClient, dev_tmk
from terminals.devices.psam import Psam
from terminals.devices.taxi import TaxiMeter
from terminals.lists import service as lists
from terminals.registry import repository as registry_repository
from terminals.registry import service as registry
from terminals.registry.models import MerchantCategory, TerminalKind

BUS_CO = "321100000000101"
TAXI_CO = "321100000000102"
BUSES = ("321100010001", "321100010002")
TAXI = "321100020001"
# The desk that sells the day's cards and loads their purses with the cash the riders pay.
DESK_CO = "321100000000103"
DESK = "321100030002"
PURSE = 3000  # fen loaded onto each rider's purse


def _psam_no(terminal_no: str) -> str:
    return "50" + terminal_no + "00"


def _psam(resources: Resources, terminal_no: str) -> Psam:
    """The terminal's PSAM, kept under the demo's var directory: its serial must survive runs."""
    path = resources.settings.var_dir / "psam" / f"{terminal_no}.json"
    if path.exists():
        return Psam.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Psam.dev(terminal_no, state_path=path)


async def _registry(resources: Resources) -> None:
    async with unit_of_work(resources.sessions) as session:
        # Added after the buses: a database of an earlier demo has the buses and not the desk.
        if await registry_repository.merchant_by_no(session, DESK_CO) is None:
            await registry.create_merchant(
                session, merchant_no=DESK_CO, name="Demo Card Sales Desk",
                category=MerchantCategory.retail, settlement_account="6222021001000103",
                actor="demo",
            )  # fmt: skip
            await registry.create_terminal(
                session, terminal_no=DESK, psam_no=_psam_no(DESK), merchant_no=DESK_CO,
                kind=TerminalKind.counter, actor="demo",
            )  # fmt: skip
        if await registry_repository.merchant_by_no(session, BUS_CO) is not None:
            return
        await registry.create_merchant(
            session,
            merchant_no=BUS_CO,
            name="Demo City Bus",
            category=MerchantCategory.bus,
            settlement_account="6222021001000101",
            actor="demo",
        )
        await registry.create_merchant(
            session,
            merchant_no=TAXI_CO,
            name="Demo Taxi",
            category=MerchantCategory.taxi,
            settlement_account="6222021001000102",
            actor="demo",
        )
        for t in BUSES:
            await registry.create_terminal(
                session, terminal_no=t, psam_no=_psam_no(t), merchant_no=BUS_CO,
                kind=TerminalKind.validator, actor="demo",
            )  # fmt: skip
        await registry.create_terminal(
            session, terminal_no=TAXI, psam_no=_psam_no(TAXI), merchant_no=TAXI_CO,
            kind=TerminalKind.validator, actor="demo",
        )  # fmt: skip
        await lists.set_parameter(session, "fares", "bus:default", {"fare": 200}, actor="demo")
        await lists.set_parameter(
            session,
            "fares",
            "taxi",
            {"flag_fall": 1000, "included_m": 3000, "per_km": 240},
            actor="demo",
        )
        await lists.set_parameter(session, "concessions", "01", {"percent": 50}, actor="demo")
        await lists.set_parameter(
            session, "transfer", "bus", {"window_minutes": 90, "discount": 100}, actor="demo"
        )


async def _cards(resources: Resources, count: int) -> dict[str, VirtualCard]:
    """The day's riders' cards by number, issued with empty purses (the desk loads them)."""
    chips: dict[str, VirtualCard] = {}
    async with unit_of_work(resources.sessions) as session:
        for _ in range(count):
            card_no = make_card_no(
                resources.settings.city_code,
                await cards_repository.next_sequence(session, resources.settings.city_code),
            )
            resident = Resident(
                id_index=secrets.token_hex(32),
                id_cipher=b"demo",
                id_masked="3211**********000X",
                name_cipher=b"demo",
                name_masked="乘*",
                sex="F",
                phone="",
                address="",
                created_by="demo",
            )
            session.add(resident)
            await session.flush()
            session.add(
                Card(
                    card_no=card_no,
                    asn=card_no,
                    resident_id=resident.id,
                    card_type=CardType.standard,
                    concession_code=CONCESSION_CODES[CardType.standard],
                    status=CardStatus.active,
                    key_version=1,
                    issued_at=clock.now(),
                    expires_on=date(2035, 12, 31),
                )
            )
            chips[card_no] = make_dev_personalized_card(card_no, 0)
    return chips


async def _load(
    resources: Resources, http: httpx.AsyncClient, chips: dict[str, VirtualCard]
) -> None:
    """Each rider pays cash at the desk, which loads it onto the purse online (圈存): the card's
    MAC1, the host's MAC2 from the HSM, the card's TAC confirmed; the ledger's card float follows
    each confirmed load."""
    host = HostClient(http, DESK, dev_tmk(DESK), psam_no=_psam_no(DESK))
    await host.sign_in()
    desk = CounterLoadTerminal(host, first_serial=int(time.time()))  # serials go on across runs
    for card_no, chip in chips.items():
        with InProcessLink(chip) as link:
            loaded = await desk.load(link, PURSE)
        if loaded.status != "confirmed":
            raise click.ClickException(
                f"the desk's load of card {card_no} ended {loaded.status} "
                f"(code {loaded.response_code})"
            )
    floats = 0
    async with resources.sessions() as session:
        for card_no in chips:
            floats += await ledger.balance(session, AccountRef(AccountKind.card_float, card_no))
    click.echo(
        f"  {len(chips)} cards issued and loaded at the desk with {PURSE / 100:.2f} yuan cash "
        f"each (online loads, MAC2 from the HSM, TAC confirmed); card float in the ledger "
        f"{floats / 100:.2f} yuan"
    )
    if floats != PURSE * len(chips):
        raise click.ClickException("the card float does not follow the desk's loads")


async def step_terminal_day(resources: Resources) -> None:
    from cardsvc.app import create_app

    await _registry(resources)
    riders = await _cards(resources, 8)
    chips = list(riders.values())
    app = create_app(resources.settings, resources)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
        await _load(resources, http, riders)
        buses = [
            BusValidator(
                HostClient(http, t, dev_tmk(t), psam_no=_psam_no(t)),
                _psam(resources, t),
                line=f"000{i + 1}",
            )
            for i, t in enumerate(BUSES)
        ]
        taxi = TaxiMeter(
            HostClient(http, TAXI, dev_tmk(TAXI), psam_no=_psam_no(TAXI)), _psam(resources, TAXI)
        )
        for device in (*buses, taxi):
            await device.start()
            # Batch numbers continue from earlier demo runs on the same database.
            device.state.batch_no = int(time.time())
        start = sum(c.state.balance for c in chips)
        for trip in range(2):
            for i, chip in enumerate(chips):
                with InProcessLink(chip) as link:
                    buses[(i + trip) % 2].tap(link)
        for i, chip in enumerate(chips[:3]):
            with InProcessLink(chip) as link:
                taxi.pay(link, distance_m=4000 + 1500 * i)
        taps = sum(len(d.state.pending) for d in (*buses, taxi))
        answers = [a for d in (*buses, taxi) for a in await d.upload()]
    accepted = sum(a["accepted_amount"] for a in answers)
    fallen = start - sum(c.state.balance for c in chips)
    click.echo(
        f"  {len(chips)} riders made {taps} trips on 2 buses and 1 taxi; {len(answers)} batches uploaded"
    )
    click.echo(
        f"  accepted {sum(a['accepted_count'] for a in answers)} records, {accepted / 100:.2f} yuan "
        f"(cards fell by {fallen / 100:.2f} yuan), clearing date {answers[0]['clearing_date']}"
    )
    async with resources.sessions() as session:
        report = await ledger.check_invariants(session)
    if accepted != fallen or not report.ok:
        raise click.ClickException("terminal day does not add up:\n" + report.render())
    click.echo("  ledger invariants hold")
