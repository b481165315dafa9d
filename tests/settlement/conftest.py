"""Fixtures of the settlement tests: the terminals' world (a bus and a taxi operator)."""

from __future__ import annotations

import pytest

from cardsvc.resources import Resources
from tests.terminals.helpers import World, build_registry


@pytest.fixture
async def world(resources: Resources) -> World:
    return await build_registry(resources)
