"""Fixtures of the online account tests: a counter with a signed-in PIN pad and residents with
active cards (staff of each role come from ``tests/conftest.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from cardsvc.cards.models import Card
from cardsvc.resources import Resources
from terminals.devices.host_client import HostClient
from terminals.registry.models import MerchantCategory, TerminalKind
from tests.factories import Site, make_card, make_site
from tests.terminals.helpers import signed_in


@dataclass
class Desk:
    """A service counter: its cash drawer code and its signed-in PIN pad."""

    counter_code: str
    site: Site
    pin_pad: HostClient

    def pin(self, card: Card, pin: str) -> dict[str, str]:
        """The PIN fields of a counter request: the PIN typed on this desk's PIN pad."""
        return {
            "card_no": card.card_no,
            "terminal_no": self.site.terminal_no,
            "pin_block": self.pin_pad.pin_block(pin, card.card_no),
        }


@pytest.fixture
async def desk(resources: Resources, client: httpx.AsyncClient) -> Desk:
    site = await make_site(resources, 321100030009, MerchantCategory.retail, TerminalKind.counter)
    return Desk("DESK09", site, await signed_in(client, site))


@pytest.fixture
async def card(resources: Resources) -> Card:
    return await make_card(resources, 11, pin=None)


@pytest.fixture
async def other_card(resources: Resources) -> Card:
    return await make_card(resources, 12, pin=None)
