"""Test world for online authorization and loads: merchants, terminals, residents, cards."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from cardsvc import clock
from cardsvc.accounts import service as accounts
from cardsvc.cards import service as cards
from cardsvc.cards.models import Card, CardStatus, CardType
from cardsvc.db import unit_of_work
from cardsvc.hsm import PinKeyRef
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.residents import service as residents
from cardsvc.resources import Resources
from hsm_sim import pboc
from hsm_sim.pin import format0_block
from terminals.access.context import TerminalContext
from terminals.access.models import TerminalSession
from terminals.access.service import SignedRequest
from terminals.devices.host_client import HostClient, dev_tmk
from terminals.registry import service as registry
from terminals.registry.models import MerchantCategory, TerminalKind
from tests.issuance.helpers import resident_id

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


async def balance(resources: Resources, kind: AccountKind, owner: str) -> int:
    async with resources.sessions() as s:
        return await ledger.balance(s, AccountRef(kind, owner))


async def available(resources: Resources, kind: AccountKind, owner: str) -> int:
    async with resources.sessions() as s:
        return await ledger.available(s, AccountRef(kind, owner))


def with_pin(host: HostClient, message: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A purchase or pre-authorization carries the holder's PIN (docs/terminal-protocol.md §10)."""
    if message in ("purchase", "preauth") and "pin_block" not in payload:
        return {**payload, "pin_block": host.pin_block(PIN, str(payload["asn"]))}
    return payload


async def signed_in(client: httpx.AsyncClient, site: Site) -> HostClient:
    host = HostClient(client, site.terminal_no, dev_tmk(site.terminal_no))
    await host.sign_in()
    return host


def free_port() -> int:
    """A loopback port nothing listens on (for an HSM that does not answer)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
