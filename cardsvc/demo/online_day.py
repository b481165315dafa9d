"""Demo step: a counter load, a parking stay and a fuel fill (``cardsvc demo``).

Registers a service counter, a car park and a filling station (once), issues a card, the holder
pays 500 yuan cash in at the counter into the online account (the counter deposit), then: the holder sets the account's PIN on the counter's PIN pad,
the counter loads 50 yuan cash onto the purse (圈存), the car park takes the fee at the exit gate
from the purse (compound records, uploaded offline) and a monthly permit from the online account
with the PIN typed on the gate's PIN pad, the pump pre-authorizes 300 yuan on the online account
(PIN again) and completes for what it dispensed. The card, the ledger and the records must agree.
"""

from __future__ import annotations

import secrets
import time
from datetime import date, timedelta

import click
import httpx

from cardsvc import clock
from cardsvc.accounts import service as accounts
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
from terminals.access.pinpads import SessionPinPads
from terminals.devices.card import make_dev_personalized_card
from terminals.devices.counter_load import CounterLoadTerminal
from terminals.devices.fuel import FuelPump
from terminals.devices.host_client import HostClient, dev_tmk
from terminals.devices.parking import ParkingTerminal
from terminals.devices.psam import Psam
from terminals.devices.validator import LOCAL_TZ
from terminals.registry import repository as registry_repository
from terminals.registry import service as registry
from terminals.registry.models import MerchantCategory, TerminalKind

COUNTER_CO = "321100000000201"
PARKING_CO = "321100000000202"
FUEL_CO = "321100000000203"
COUNTER = "321100030001"
DEMO_PIN = "258147"  # typed on the PIN pads only: the host sees PIN blocks, the HSM the PIN
PERMIT = 12_000  # fen: the car park's monthly permit, paid from the online account
GATE = "321100040001"
PUMP = "321100050001"


def _psam_no(terminal_no: str) -> str:
    return "50" + terminal_no + "00"


async def _registry(resources: Resources) -> None:
    async with unit_of_work(resources.sessions) as session:
        if await registry_repository.merchant_by_no(session, COUNTER_CO) is not None:
            return
        for merchant_no, name, category, terminal_no, kind in (
            (COUNTER_CO, "Citizen Card Service Centre", MerchantCategory.retail, COUNTER,
             TerminalKind.counter),
            (PARKING_CO, "Demo Car Park", MerchantCategory.parking, GATE, TerminalKind.pos),
            (FUEL_CO, "Demo Filling Station", MerchantCategory.fuel, PUMP, TerminalKind.pos),
        ):  # fmt: skip
            await registry.create_merchant(
                session, merchant_no=merchant_no, name=name, category=category,
                settlement_account="6222021001000" + merchant_no[-3:], actor="demo",
            )  # fmt: skip
            await registry.create_terminal(
                session,
                terminal_no=terminal_no,
                psam_no=_psam_no(terminal_no),
                merchant_no=merchant_no,
                kind=kind,
                actor="demo",
            )


async def _card(resources: Resources, account: int) -> tuple[str, int]:
    async with unit_of_work(resources.sessions) as session:
        card_no = make_card_no(
            resources.settings.city_code,
            await cards_repository.next_sequence(session, resources.settings.city_code),
        )
        resident = Resident(
            id_index=secrets.token_hex(32), id_cipher=b"demo", id_masked="3211**********000X",
            name_cipher=b"demo", name_masked="车*", sex="M", phone="", address="", created_by="demo",
        )  # fmt: skip
        session.add(resident)
        await session.flush()
        session.add(
            Card(
                card_no=card_no, asn=card_no, resident_id=resident.id, card_type=CardType.standard,
                concession_code=CONCESSION_CODES[CardType.standard], status=CardStatus.active, key_version=1,
                issued_at=clock.now(), expires_on=date(2035, 12, 31),
            )
        )  # fmt: skip
        await session.flush()
        # The holder pays cash in at the counter (what POST /accounts/{reference}/deposits does).
        holder_account = await accounts.for_card(session, resources.settings, card_no)
        await accounts.deposit(
            session, resources.settings, holder_account, counter_code=COUNTER,
            receipt_no=f"DEMO-{resident.id}", amount=account, actor="demo-operator",
        )  # fmt: skip
        return card_no, resident.id


async def _balance(resources: Resources, kind: AccountKind, owner: str) -> int:
    async with resources.sessions() as session:
        return await ledger.balance(session, AccountRef(kind, owner))


async def _set_pin(resources: Resources, desk: HostClient, card_no: str) -> None:
    """The holder types the PIN on the counter's PIN pad; the counter sets it (the PIN pad's
    block goes to the HSM, which answers the offset the account keeps)."""
    settings = resources.settings
    async with unit_of_work(resources.sessions) as session:
        key = await SessionPinPads().counter_pin_key(session, COUNTER)
        account = await accounts.for_card(session, settings, card_no)
        target = await accounts.pin_target(session, account, card_no)
    block = bytes.fromhex(desk.pin_block(DEMO_PIN, card_no))
    made = await accounts.make_pin(
        resources.hsm, settings, target, accounts.PinEntry(key, block, card_no)
    )
    async with unit_of_work(resources.sessions) as session:
        await accounts.store_pin(session, settings, target, made, actor="demo-operator")


async def step_online_day(resources: Resources) -> None:
    from cardsvc.app import create_app

    await _registry(resources)
    card_no, resident_id = await _card(resources, 50_000)
    click.echo(
        f"  cash paid in at the counter: 500.00 yuan into the online account "
        f"(receipt DEMO-{resident_id}, once per receipt)"
    )
    chip = make_dev_personalized_card(card_no, 0)
    psam_path = resources.settings.var_dir / "psam" / f"{GATE}.json"
    psam_path.parent.mkdir(parents=True, exist_ok=True)
    psam = Psam.load(psam_path) if psam_path.exists() else Psam.dev(GATE, state_path=psam_path)
    run = int(time.time())  # serials and batch numbers continue across demo runs
    now = clock.now().astimezone(LOCAL_TZ).replace(microsecond=0)
    wall = {"now": now - timedelta(hours=1, minutes=40)}
    app = create_app(resources.settings, resources)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://demo"
    ) as http:
        desk_host = HostClient(http, COUNTER, dev_tmk(COUNTER), psam_no=_psam_no(COUNTER))
        await desk_host.sign_in()
        desk = CounterLoadTerminal(desk_host, first_serial=run)
        await _set_pin(resources, desk_host, card_no)
        click.echo("  PIN set at the counter from its PIN pad (a format 0 block; the HSM keeps it)")
        gate = ParkingTerminal(
            HostClient(http, GATE, dev_tmk(GATE), psam_no=_psam_no(GATE)),
            psam,
            lot="0001",
            clock=lambda: wall["now"],
        )
        await gate.start()
        gate.state.batch_no = run
        pump_host = HostClient(http, PUMP, dev_tmk(PUMP), psam_no=_psam_no(PUMP))
        await pump_host.sign_in()
        pump = FuelPump(pump_host, price_per_litre=780, first_serial=run)

        with InProcessLink(chip) as link:
            loaded = await desk.load(link, 5_000)
        click.echo(
            f"  counter load of 50.00 yuan cash: code {loaded.response_code}, load {loaded.status}"
        )
        with InProcessLink(chip) as link:
            gate.gate = "entry"
            gate.tap(link)
            wall["now"] = now
            gate.gate = "exit"
            left = gate.tap(link)
        answers = await gate.upload()
        click.echo(
            f"  parked 1 h 40 min: exit fee {left.amount / 100:.2f} yuan from the purse; "
            f"upload accepted {answers[0]['accepted_count']} records"
        )
        with InProcessLink(chip) as link:
            permit = await gate.pay_from_account(link, PERMIT, pin=DEMO_PIN, terminal_serial=run)
        click.echo(
            f"  monthly permit {PERMIT / 100:.2f} yuan at the gate from the online account with "
            f"the PIN: code {permit.response_code}"
        )
        with InProcessLink(chip) as link:
            preauth, completion = await pump.fuel(
                link, max_amount=30_000, millilitres=31_500, pin=DEMO_PIN
            )
        fuel = completion.approved_amount if completion else 0
        click.echo(
            f"  fuel: pre-authorized 300.00 yuan (code {preauth.response_code}), "
            f"completed for 31.5 l = {fuel / 100:.2f} yuan from the online account"
        )
    float_ = await _balance(resources, AccountKind.card_float, card_no)
    account = await _balance(resources, AccountKind.resident_account, str(resident_id))
    click.echo(
        f"  card purse {chip.state.balance / 100:.2f} yuan = ledger card float {float_ / 100:.2f} yuan; "
        f"online account {account / 100:.2f} yuan"
    )
    async with resources.sessions() as session:
        report = await ledger.check_invariants(session)
    if (
        loaded.status != "confirmed"
        or chip.state.balance != float_
        or not permit.approved
        or account != 50_000 - PERMIT - fuel
        or not report.ok
    ):
        raise click.ClickException("online day does not add up:\n" + report.render())
    click.echo("  ledger invariants hold")
