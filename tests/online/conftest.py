"""Online/loads fixtures: a world of merchants and terminals, on both engines.

``engine`` truncates only the tables that exist (as tests/ledger does) and keeps a pool large
enough for the concurrency tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cardsvc.db import create_engine
from cardsvc.resources import Resources
from terminals.registry.models import MerchantCategory
from tests.conftest_pcsc import connect, pcscd
from tests.online.helpers import Site, make_site

__all__ = ["connect", "pcscd"]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=12)
    if engine.dialect.name == "postgresql":
        async with engine.begin() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
            tables = [n for n in names if n != "alembic_version"]
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    yield engine
    await engine.dispose()


@pytest.fixture
async def counter(resources: Resources) -> Site:
    """A service counter (retail category) that loads purses."""
    return await make_site(resources, 101, MerchantCategory.retail)


@pytest.fixture
async def pump(resources: Resources) -> Site:
    return await make_site(resources, 201, MerchantCategory.fuel)


@pytest.fixture
async def parking(resources: Resources) -> Site:
    return await make_site(resources, 301, MerchantCategory.parking)


@pytest.fixture
async def shop(resources: Resources) -> Site:
    return await make_site(resources, 401, MerchantCategory.retail)
