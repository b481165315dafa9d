"""Fixtures of the clearing-day tests: the terminals' world (merchants, buses, taxis)."""

from __future__ import annotations

import pytest

from cardsvc.resources import Resources
from tests.terminals.helpers import World, build_registry


@pytest.fixture
async def world(resources: Resources) -> World:
    return await build_registry(resources)
