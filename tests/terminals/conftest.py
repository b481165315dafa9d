"""Fixtures of the terminal tests: the online sites (a counter, a pump, a parking, a shop), and the
PC/SC reader for the tests that run a card through it."""

from __future__ import annotations

import pytest

from cardsvc.resources import Resources
from terminals.registry.models import MerchantCategory, TerminalKind
from tests.conftest_pcsc import connect, pcscd
from tests.factories import Site, make_site

__all__ = ["connect", "pcscd"]


@pytest.fixture
async def counter(resources: Resources) -> Site:
    """A service counter (retail category) that loads purses."""
    return await make_site(resources, 101, MerchantCategory.retail, TerminalKind.counter)


@pytest.fixture
async def pump(resources: Resources) -> Site:
    return await make_site(resources, 201, MerchantCategory.fuel)


@pytest.fixture
async def parking(resources: Resources) -> Site:
    return await make_site(resources, 301, MerchantCategory.parking)


@pytest.fixture
async def shop(resources: Resources) -> Site:
    return await make_site(resources, 401, MerchantCategory.retail)
