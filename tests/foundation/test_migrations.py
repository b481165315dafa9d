"""Migrations run up and down on both engines, and the models match them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import inspect, text
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


_MERCHANT = (
    "INSERT INTO merchants (id, merchant_no, name, category, settlement_account, status, "
    "created_at) VALUES (1, '321100000000001', 'M', 'retail', '622200', 'active', :at)"
)
_TERMINAL = (
    "INSERT INTO terminals (id, terminal_no, psam_no, merchant_id, status, description, "
    "blacklist_version, params_version, created_at) "
    "VALUES (:id, :terminal_no, :psam_no, 1, 'active', '', 0, 0, :at)"
)
_LOAD = (
    "INSERT INTO purse_loads (id, terminal_id, terminal_no, terminal_serial, merchant_no, "
    "request_hash, asn, source, amount, balance_before, online_counter, key_version, random, "
    "mac1, response_code, status, created_at) VALUES (:id, :terminal_id, :terminal_no, :serial, "
    "'321100000000001', '', '3211000000000001', :source, 100, 0, :counter, 1, '00000000', "
    "'00000000', '00', 'confirmed', :at)"
)


async def _rows_at_0005(url: str) -> None:
    """Terminals 1-3 of one merchant; 1 loaded cash and from the account, 2 from the account."""
    at = datetime(2026, 11, 1, 8, tzinfo=UTC)
    engine: AsyncEngine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(_MERCHANT), {"at": at})
            await conn.execute(
                text(_TERMINAL),
                [
                    {"id": t, "terminal_no": f"3211000000{t:02d}", "psam_no": f"50{t}", "at": at}
                    for t in (1, 2, 3)
                ],
            )
            loads = ((1, 1, "cash"), (2, 1, "account"), (3, 2, "account"))
            await conn.execute(
                text(_LOAD),
                [
                    {"id": i, "serial": i, "counter": i, "terminal_id": t,
                     "terminal_no": f"3211000000{t:02d}", "source": source, "at": at}
                    for i, t, source in loads
                ],
            )  # fmt: skip
    finally:
        await engine.dispose()


async def _kinds_then_clear(url: str) -> list[tuple[object, ...]]:
    engine: AsyncEngine = create_engine(url)
    try:
        async with engine.begin() as conn:
            kinds = [
                tuple(r)
                for r in await conn.execute(text("SELECT id, kind FROM terminals ORDER BY id"))
            ]
            for table in ("purse_loads", "terminals", "merchants"):
                await conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - fixed names
            return kinds
    finally:
        await engine.dispose()


def test_terminals_that_loaded_purses_keep_loading_after_0006(database_url: str) -> None:
    """0006 gives existing terminals a kind from what they did: cash loads → counter, account
    loads only → kiosk, anything else → pos."""
    migrate.downgrade(database_url, "0005")
    asyncio.run(_rows_at_0005(database_url))
    migrate.upgrade(database_url)
    assert asyncio.run(_kinds_then_clear(database_url)) == [
        (1, "counter"),
        (2, "kiosk"),
        (3, "pos"),
    ]
