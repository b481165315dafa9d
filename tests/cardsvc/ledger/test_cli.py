"""``cardsvc ledger check`` and ``cardsvc ledger balance`` against a real database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, text

from cardsvc.db import create_engine, session_factory
from cardsvc.ledger import service as ledger
from cardsvc.ledger.cli import ledger as ledger_group
from cardsvc.settings import get_settings
from tests.cardsvc.ledger.helpers import card, load, merchant, purchase_batch


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("CARDSVC_MODE", "development")
    monkeypatch.setenv("CARDSVC_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


async def _prepare(url: str) -> None:
    engine = create_engine(url)
    try:
        if engine.dialect.name == "postgresql":
            async with engine.begin() as conn:
                names = await conn.run_sync(lambda c: inspect(c).get_table_names())
                tables = ", ".join(n for n in names if n.startswith("ledger_"))
                await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        async with session_factory(engine)() as session:
            await ledger.post(session, load("l1", card(1), 1000))
            await ledger.post(session, purchase_batch("u1", [(card(1), 300)], merchant(1)))
            await session.commit()
    finally:
        await engine.dispose()


async def _tamper(url: str, amount: int) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE ledger_accounts SET balance = balance + :d WHERE owner_ref = :o"),
                {"d": amount, "o": card(1).owner_ref},
            )
    finally:
        await engine.dispose()


def test_check_passes_then_fails_on_tampering(cli_env: str) -> None:
    asyncio.run(_prepare(cli_env))
    runner = CliRunner()
    ok = runner.invoke(ledger_group, ["check"])
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output
    assert "transactions:    2" in ok.output

    balance = runner.invoke(ledger_group, ["balance", "card_float", card(1).owner_ref])
    assert balance.exit_code == 0, balance.output
    assert "balance 700 fen" in balance.output
    past = runner.invoke(
        ledger_group, ["balance", "card_float", card(1).owner_ref, "--as-of", "2000-01-01T00:00:00"]
    )
    assert "balance 0 fen" in past.output

    asyncio.run(_tamper(cli_env, 1))
    try:
        bad = runner.invoke(ledger_group, ["check"])
        assert bad.exit_code == 1
        assert "balance_differs_from_lines" in bad.output
        assert "balances_not_zero" in bad.output
    finally:
        asyncio.run(_tamper(cli_env, -1))
