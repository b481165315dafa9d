"""``cardsvc ledger``: invariant check and balances (DESIGN §10)."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

import click

from cardsvc.db import create_engine, session_factory
from cardsvc.ledger import service
from cardsvc.ledger.models import AccountKind
from cardsvc.ledger.schemas import AccountRef, InvariantReport
from cardsvc.settings import get_settings


@click.group()
def ledger() -> None:
    """Double-entry ledger: invariants and balances."""


async def _check(url: str) -> InvariantReport:
    engine = create_engine(url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            report = await service.check_invariants(session)
            await session.rollback()
            return report
    finally:
        await engine.dispose()


@ledger.command("check")
def check() -> None:
    """Check every ledger invariant; print a report and exit 1 on any violation."""
    report = asyncio.run(_check(get_settings().database_url))
    click.echo(report.render())
    if not report.ok:
        sys.exit(1)


def _parse_as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    # A time without zone is read as UTC, the zone every server time is stored in (DESIGN §5).
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _balance(url: str, ref: AccountRef, as_of: datetime | None) -> tuple[int, int]:
    engine = create_engine(url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            amount = await service.balance(session, ref, as_of=as_of)
            free = await service.available(session, ref)
            await session.rollback()
            return amount, free
    finally:
        await engine.dispose()


@ledger.command("balance")
@click.argument("kind", type=click.Choice([k.value for k in AccountKind]))
@click.argument("owner_ref", default="")
@click.option("--as-of", default=None, help="ISO time (UTC unless it names a zone).")
def balance(kind: str, owner_ref: str, as_of: str | None) -> None:
    """Print the balance (fen, normal sense) of KIND OWNER_REF, now or as of a past time."""
    ref = AccountRef(AccountKind(kind), owner_ref)
    moment = _parse_as_of(as_of)
    amount, free = asyncio.run(_balance(get_settings().database_url, ref, moment))
    when = moment.isoformat() if moment else "now"
    click.echo(f"{ref} balance {amount} fen as of {when}")
    if moment is None:
        click.echo(f"{ref} available {free} fen")
