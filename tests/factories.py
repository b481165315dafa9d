"""The one place tests build what they need: staff accounts and their tokens, residents' IDs,
merchants and terminals (the registry world of the offline tests, the online tests' sites), and
issued cards (funded chips for the terminals, cards with an online account and a PIN)."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.accounts import service as accounts
from cardsvc.cards import service as cards
from cardsvc.cards.models import CONCESSION_CODES, Card, CardStatus, CardType
from cardsvc.db import unit_of_work
from cardsvc.hsm import PinKeyRef
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.residents import service as residents
from cardsvc.residents.idnumber import check_char
from cardsvc.residents.models import Resident
from cardsvc.resources import Resources
from cardsvc.staff import service as staff_service
from cardsvc.staff.auth import Role
from hsm_sim import pboc
from hsm_sim.pin import format0_block
from terminals.access.context import TerminalContext
from terminals.access.models import TerminalSession
from terminals.access.service import SignedRequest
from terminals.devices.card import EF_PUBLIC, VirtualCard, make_dev_personalized_card
from terminals.devices.host_client import dev_tmk
from terminals.lists import service as lists
from terminals.registry import service as registry
from terminals.registry.models import MerchantCategory, TerminalKind

# Staff and residents.

PASSWORD = "correct horse battery"


def _resources(client: httpx.AsyncClient) -> Resources:
    app = getattr(client._transport, "app")  # noqa: B009 - httpx.ASGITransport keeps the app
    resources: Resources = app.state.resources
    return resources


async def create_staff(
    resources: Resources, username: str, roles: Iterable[Role], password: str = PASSWORD
) -> None:
    async with unit_of_work(resources.sessions) as session:
        await staff_service.create_staff(
            session, username=username, password=password, roles=roles, actor="test"
        )


async def staff_token(client: httpx.AsyncClient, username: str, roles: Iterable[Role]) -> str:
    """Create a staff user directly through the service, then log in over the API."""
    await create_staff(_resources(client), username, roles)
    response = await client.post(
        "/api/v1/staff/login", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def staff_headers(client: httpx.AsyncClient, username: str, *roles: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {await staff_token(client, username, roles)}"}


def resident_id(region: str = "321102", birth: str = "19900307", order: str = "123") -> str:
    """A valid GB 11643 ID for the given parts (check digit computed)."""
    first17 = region + birth + order
    return first17 + check_char(first17)


# The registry world of the offline tests: a bus and a taxi operator, their terminals, the
# default fare parameters, issued and funded cards with their chips.

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


# The online tests' sites (a merchant with one terminal) and cards with an online account.

ACTOR = "test"
BANK = AccountRef(AccountKind.bank, "TESTBANK")
# The PIN every test card's account gets (make_card), typed on the terminals' PIN pads.
PIN = "730518"
# Clear PIN keys of the sessions Site.signed opened, by session id (what the PIN pad holds).
_PIN_KEYS: dict[str, bytes] = {}


def pin_block_for(signed: SignedRequest, card_no: str, pin: str = PIN) -> str:
    """The PIN pad's block for ``pin`` under the PIN key of a session from Site.signed."""
    return (
        pboc.tdes_encrypt(_PIN_KEYS[signed.session_id], format0_block(pin, card_no)).hex().upper()
    )


async def set_pin(resources: Resources, card: Card, pin: str = PIN) -> None:
    """Give the card holder's account ``pin``, as a counter does: typed on a PIN pad, its block
    turned by the HSM into the offset the account stores (no PIN key outside the HSM here)."""
    pad = "999999999999"
    opened = await resources.hsm.terminal_session_open(bytes.fromhex(pad))
    pin_key = pboc.tdes_decrypt(dev_tmk(pad), opened.pin_key_under_tmk)
    entry = accounts.PinEntry(
        PinKeyRef(opened.pin_key_under_lmk),
        pboc.tdes_encrypt(pin_key, format0_block(pin, card.card_no)),
        card.card_no,
    )
    async with unit_of_work(resources.sessions) as s:
        account = await accounts.open_account(s, resources.settings, card.resident_id)
        target = await accounts.pin_target(s, account, card.card_no)
    made = await accounts.make_pin(resources.hsm, resources.settings, target, entry)
    async with unit_of_work(resources.sessions) as s:
        await accounts.store_pin(s, resources.settings, target, made, actor=ACTOR)


@dataclass(frozen=True)
class Site:
    merchant_no: str
    terminal_no: str
    category: MerchantCategory
    terminal_id: int
    merchant_id: int
    kind: TerminalKind = TerminalKind.pos

    async def signed(self, resources: Resources, seq: int = 1) -> SignedRequest:
        """What VerifiedTerminal gives an endpoint (for service-level tests): a live session of
        this terminal, as if its MAC had verified, with a PIN key from the HSM (its clear value
        kept for :func:`pin_block_for`)."""
        session_id = secrets.token_hex(16)
        opened = await resources.hsm.terminal_session_open(bytes.fromhex(self.terminal_no))
        _PIN_KEYS[session_id] = pboc.tdes_decrypt(
            dev_tmk(self.terminal_no), opened.pin_key_under_tmk
        )
        async with unit_of_work(resources.sessions) as session:
            session.add(
                TerminalSession(
                    id=session_id, terminal_id=self.terminal_id, key_blob=b"-", key_kcv="000000",
                    pin_key_blob=opened.pin_key_under_lmk, last_seq=seq - 1,
                    expires_at=clock.now() + timedelta(hours=1),
                )
            )  # fmt: skip
        return SignedRequest(
            self.terminal_no, session_id, seq, self.terminal_id, "50" + self.terminal_no + "00",
            opened.pin_key_under_lmk, self.kind,
        )  # fmt: skip

    def context(self, seq: int = 1) -> TerminalContext:
        """What AuthenticatedTerminal gives an endpoint (for service-level tests)."""
        return TerminalContext(
            terminal_id=self.terminal_id,
            terminal_no=self.terminal_no,
            psam_no="50" + self.terminal_no + "00",
            kind=self.kind,
            merchant_id=self.merchant_id,
            merchant_no=self.merchant_no,
            merchant_category=self.category.value,
            session_id="0" * 32,
            seq=seq,
        )


async def make_site(
    resources: Resources,
    n: int,
    category: MerchantCategory,
    kind: TerminalKind = TerminalKind.pos,
) -> Site:
    merchant_no = f"{n:015d}"
    terminal_no = f"{n:012d}"
    async with unit_of_work(resources.sessions) as s:
        merchant = await registry.create_merchant(
            s, merchant_no=merchant_no, name=f"{category} {n}", category=category,
            settlement_account="6222020000000000001", actor=ACTOR,
        )  # fmt: skip
        terminal = await registry.create_terminal(
            s,
            terminal_no=terminal_no,
            psam_no="50" + terminal_no + "00",
            merchant_no=merchant_no,
            kind=kind,
            actor=ACTOR,
        )
        return Site(merchant_no, terminal_no, category, terminal.id, merchant.id, kind)


async def make_card(
    resources: Resources,
    order: int,
    *,
    card_type: CardType = CardType.standard,
    account: int = 0,
    status: CardStatus = CardStatus.active,
    expires_on: date | None = None,
    pin: str | None = PIN,
) -> Card:
    """A resident with an issued card, ``account`` fen in the online account and, when the card
    is active, ``pin`` as the account's PIN (None: no PIN set)."""
    card = await _make_card(
        resources, order, card_type=card_type, account=account, status=status, expires_on=expires_on
    )
    if pin is not None and status is CardStatus.active:
        await set_pin(resources, card, pin)
    return card


async def _make_card(
    resources: Resources,
    order: int,
    *,
    card_type: CardType,
    account: int,
    status: CardStatus,
    expires_on: date | None,
) -> Card:
    async with unit_of_work(resources.sessions) as s:
        resident = await residents.register(
            s,
            resources.hsm,
            residents.ResidentIn(
                resident_id(order=f"{order:03d}"), "测试", "13800000000", "测试路1号"
            ),
            actor=ACTOR,
            today=resources.settings.local_date(clock.now()),
        )
        card = await cards.allocate(
            s, resources.settings, resident_id=resident.id, card_type=card_type, actor=ACTOR
        )
        card.status = status
        card.issued_at = datetime.now(UTC)
        card.expires_on = expires_on or date(2035, 12, 31)
        if account:
            await ledger.post(
                s,
                PostingRequest(
                    idempotency_key=f"test-deposit:{resident.id}",
                    tx_type="transfer",
                    clearing_date=date.today(),
                    entries=[
                        Entry(BANK, Side.debit, account),
                        Entry(
                            AccountRef(AccountKind.resident_account, str(resident.id)),
                            Side.credit,
                            account,
                        ),
                    ],
                ),
            )
        await s.flush()
        return card
