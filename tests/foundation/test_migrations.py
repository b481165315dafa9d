"""Migrations run up and down on both engines, and the models match them."""

from __future__ import annotations

import asyncio

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from cardsvc import migrate
from cardsvc.db import create_engine, import_all_models, metadata


async def _tables(url: str) -> set[str]:
    engine: AsyncEngine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_head_has_every_model_table(database_url: str) -> None:
    import_all_models()
    tables = await _tables(database_url)
    assert {t.name for t in metadata.sorted_tables} <= tables
    assert "alembic_version" in tables


def test_models_match_migrations(database_url: str) -> None:
    migrate.check(database_url)  # raises when autogenerate would find a difference


def test_down_to_base_and_up_again(database_url: str) -> None:
    migrate.downgrade(database_url, "base")
    assert asyncio.run(_tables(database_url)) <= {"alembic_version"}
    migrate.upgrade(database_url)
    import_all_models()
    assert {t.name for t in metadata.sorted_tables} <= asyncio.run(_tables(database_url))
