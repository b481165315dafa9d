"""Helpers of the terminal tests: a signed host client, a tap on a bus validator, balances, the
PIN a purchase carries, a counter's books after loads. The registry world, the online sites and
the cards they run on are in :mod:`tests.factories`."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.ledger.schemas import AccountRef
from cardsvc.reader.link import InProcessLink
from cardsvc.resources import Resources
from terminals.devices.bus import BusValidator
from terminals.devices.card import VirtualCard
from terminals.devices.host_client import HostClient, dev_tmk
from terminals.devices.psam import Psam
from terminals.loads.models import LoadStatus, PurseLoad
from tests.factories import (
    BUS_MERCHANT,
    COUNTER,
    PIN,
    TAXI_MERCHANT,
    Site,
    World,
    build_registry,
    card_no,
    issue_cards,
    psam_no,
    set_default_parameters,
    terminal_no,
)

# Moved to tests.factories; importable here while branches written before the move land.
__all__ = [
    "BUS_MERCHANT", "COUNTER", "TAXI_MERCHANT", "World", "assert_books_agree", "available",
    "balance", "build_registry", "bus", "card_no", "float_balance", "free_port", "host",
    "issue_cards", "loads_of", "psam_no", "set_default_parameters", "signed_in", "tap",
    "terminal_no", "with_pin",
]  # fmt: skip


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


async def loads_of(resources: Resources, asn: str) -> list[tuple[str, str | None, int]]:
    """(status, resolution, amount) of the card's loads that moved money, oldest first."""
    async with resources.sessions() as s:
        rows = (
            await s.execute(select(PurseLoad).where(PurseLoad.asn == asn).order_by(PurseLoad.id))
        ).scalars()
        return [
            (r.status.value, r.resolution.value if r.resolution else None, r.amount)
            for r in rows
            if r.status is not LoadStatus.declined
        ]


async def assert_books_agree(
    resources: Resources, card: VirtualCard, card_no: str, counter: Site, cash: int
) -> None:
    """The card's purse, its float in the ledger and the counter's cash tell one story."""
    assert await balance(resources, AccountKind.card_float, card_no) == card.state.balance
    assert await balance(resources, AccountKind.counter_cash, counter.terminal_no) == cash
    async with resources.sessions() as s:
        report = await ledger.check_invariants(s)
    assert report.ok, report.render()
