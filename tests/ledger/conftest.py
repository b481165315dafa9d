"""Ledger test fixtures.

``engine`` is overridden so that, on PostgreSQL, only tables that exist are truncated: the
shared fixture truncates every model table, which fails while other domains' migrations are
still placeholders. Behaviour is otherwise the same as tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cardsvc.db import create_engine


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=10)
    if engine.dialect.name == "postgresql":
        async with engine.begin() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
            tables = [n for n in names if n != "alembic_version"]
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    yield engine
    await engine.dispose()


@pytest.fixture
def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"
