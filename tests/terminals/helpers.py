"""Test world for terminals: merchants, terminals, parameters, issued and funded cards."""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.cards.models import CONCESSION_CODES, Card, CardStatus, CardType
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.reader.link import InProcessLink
from cardsvc.residents.models import Resident
from cardsvc.resources import Resources
from terminals.devices.bus import BusValidator
from terminals.devices.card import EF_PUBLIC, VirtualCard, make_dev_personalized_card
from terminals.devices.host_client import HostClient, dev_tmk
from terminals.devices.psam import Psam
from terminals.lists import service as lists
from terminals.registry import service as registry
from terminals.registry.models import MerchantCategory

BUS_MERCHANT = "321100000000001"
TAXI_MERCHANT = "321100000000002"
COUNTER = AccountRef(AccountKind.counter_cash, "OUTLET01")


def terminal_no(n: int) -> str:
    return f"3211{n:08d}"


def psam_no(terminal: str) -> str:
    return "50" + terminal + "00"


def card_no(n: int) -> str:
    body = f"3211{n:011d}"
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


@dataclass
class World:
    resources: Resources
    bus_terminals: list[str] = field(default_factory=list)
    taxi_terminals: list[str] = field(default_factory=list)


async def build_registry(resources: Resources, buses: int = 2, taxis: int = 2) -> World:
    world = World(resources)
    async with unit_of_work(resources.sessions) as session:
        await registry.create_merchant(
            session, merchant_no=BUS_MERCHANT, name="City Bus Co.", category=MerchantCategory.bus,
            settlement_account="6222000011112222", actor="test",
        )  # fmt: skip
        await registry.create_merchant(
            session, merchant_no=TAXI_MERCHANT, name="Taxi Co.", category=MerchantCategory.taxi,
            settlement_account="6222000033334444", actor="test",
        )  # fmt: skip
        for i in range(buses):
            t = terminal_no(100 + i)
            await registry.create_terminal(
                session, terminal_no=t, psam_no=psam_no(t), merchant_no=BUS_MERCHANT, actor="test"
            )
            world.bus_terminals.append(t)
        for i in range(taxis):
            t = terminal_no(200 + i)
            await registry.create_terminal(
                session, terminal_no=t, psam_no=psam_no(t), merchant_no=TAXI_MERCHANT, actor="test"
            )
            world.taxi_terminals.append(t)
        await set_default_parameters(session)
    return world


async def set_default_parameters(session: AsyncSession) -> None:
    await lists.set_parameter(session, "fares", "bus:default", {"fare": 200}, actor="test")
    await lists.set_parameter(session, "fares", "bus:0002", {"fare": 300}, actor="test")
    await lists.set_parameter(
        session,
        "fares",
        "taxi",
        {"flag_fall": 1000, "included_m": 3000, "per_km": 240, "waiting_per_min": 50},
        actor="test",
    )
    await lists.set_parameter(session, "concessions", "00", {"percent": 100}, actor="test")
    await lists.set_parameter(session, "concessions", "01", {"percent": 50}, actor="test")
    await lists.set_parameter(session, "concessions", "02", {"percent": 0}, actor="test")
    await lists.set_parameter(
        session, "transfer", "bus", {"window_minutes": 90, "discount": 100}, actor="test"
    )


async def issue_cards(
    resources: Resources, numbers: list[int], balance: int, card_type: CardType = CardType.standard
) -> dict[str, VirtualCard]:
    """Issued cards in the database, funded in the ledger, and their virtual chips."""
    chips: dict[str, VirtualCard] = {}
    async with unit_of_work(resources.sessions) as session:
        for n in numbers:
            no = card_no(n)
            resident = Resident(
                id_index=secrets.token_hex(32),
                id_cipher=b"x",
                id_masked="3211**********123X",
                name_cipher=b"x",
                name_masked="张*",
                sex="M",
                phone="",
                address="",
                created_by="test",
            )
            session.add(resident)
            await session.flush()
            session.add(
                Card(
                    card_no=no,
                    asn=no,
                    resident_id=resident.id,
                    card_type=card_type,
                    concession_code=CONCESSION_CODES[card_type],
                    status=CardStatus.active,
                    chip_serial=None,
                    key_version=1,
                    issued_at=datetime.now(UTC),
                    expires_on=date(2034, 12, 31),
                )
            )
            chip = make_dev_personalized_card(no, balance)
            if card_type is not CardType.standard:
                files = dict(chip.state.files)
                ef = bytearray(files[EF_PUBLIC])
                ef[28] = int(CONCESSION_CODES[card_type], 16)
                files[EF_PUBLIC] = bytes(ef)
                chip = VirtualCard(dataclasses.replace(chip.state, files=files))
            chips[no] = chip
        await session.flush()
        if balance:
            for no in chips:
                await ledger.post(
                    session,
                    PostingRequest(
                        idempotency_key=f"test-load:{no}",
                        tx_type="load",
                        clearing_date=date.today(),
                        entries=[
                            Entry(COUNTER, Side.debit, balance),
                            Entry(AccountRef(AccountKind.card_float, no), Side.credit, balance),
                        ],
                    ),
                )
    return chips


def host(client: httpx.AsyncClient, terminal: str) -> HostClient:
    return HostClient(client, terminal, dev_tmk(terminal), psam_no=psam_no(terminal))


def tap(device: BusValidator, chip: VirtualCard, **kwargs: Any) -> Any:
    with InProcessLink(chip) as link:
        return device.tap(link, **kwargs)


async def bus(client: httpx.AsyncClient, terminal: str, line: str = "0001") -> BusValidator:
    device = BusValidator(host(client, terminal), Psam.dev(terminal), line=line)
    await device.start()
    return device


async def float_balance(resources: Resources, no: str) -> int:
    async with resources.sessions() as session:
        return await ledger.balance(session, AccountRef(AccountKind.card_float, no))
