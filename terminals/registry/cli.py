"""``cardsvc merchants ...`` and ``cardsvc terminals ...``: the registry from the command line.

Changes are audited with the actor ``cli:<user>``.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.db import create_engine, session_factory, unit_of_work
from cardsvc.settings import get_settings
from terminals.access import service as access
from terminals.lists import service as lists
from terminals.registry import repository, service
from terminals.registry.models import MerchantCategory, TerminalKind, TerminalStatus

T = TypeVar("T")


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _run(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = create_engine(get_settings().database_url, pool_size=1)
        try:
            async with unit_of_work(session_factory(engine)) as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(main())


@click.group()
def merchants() -> None:
    """Operators and merchants (15-digit ids)."""


@merchants.command("add")
@click.argument("merchant_no")
@click.argument("name")
@click.option("--category", type=click.Choice([c.value for c in MerchantCategory]), required=True)
@click.option("--account", "settlement_account", required=True, help="Settlement bank account.")
def merchants_add(merchant_no: str, name: str, category: str, settlement_account: str) -> None:
    """Register a merchant."""
    if len(merchant_no) != 15 or not merchant_no.isdigit():
        raise click.BadParameter("a merchant id is 15 digits")

    async def work(session: AsyncSession) -> None:
        await service.create_merchant(
            session,
            merchant_no=merchant_no,
            name=name,
            category=MerchantCategory(category),
            settlement_account=settlement_account,
            actor=_actor(),
        )

    _run(work)
    click.echo(f"merchant {merchant_no} ({category}) registered")


@merchants.command("list")
def merchants_list() -> None:
    """List merchants."""

    async def work(session: AsyncSession) -> list[str]:
        return [
            f"{m.merchant_no}  {m.category.value:8}  {m.status.value:9}  {m.name}"
            for m in await repository.list_merchants(session)
        ]

    for line in _run(work):
        click.echo(line)


@click.group()
def terminals() -> None:
    """Terminals (12-digit numbers, one PSAM each) and their parameter tables."""


@terminals.command("add")
@click.argument("terminal_no")
@click.option("--psam", "psam_no", required=True, help="PSAM serial number, 16 hex digits.")
@click.option("--merchant", "merchant_no", required=True)
@click.option(
    "--kind",
    type=click.Choice([k.value for k in TerminalKind]),
    default=TerminalKind.pos.value,
    show_default=True,
    help="validator: offline only; pos: also online payments; kiosk: also loads from the "
    "online account or a replaced card's balance; counter: also cash loads.",
)
@click.option("--description", default="")
def terminals_add(
    terminal_no: str, psam_no: str, merchant_no: str, kind: str, description: str
) -> None:
    """Register a terminal for a merchant."""
    if len(terminal_no) != 12 or not terminal_no.isdigit():
        raise click.BadParameter("a terminal number is 12 digits")

    async def work(session: AsyncSession) -> None:
        await service.create_terminal(
            session,
            terminal_no=terminal_no,
            psam_no=psam_no.upper(),
            merchant_no=merchant_no,
            kind=TerminalKind(kind),
            description=description,
            actor=_actor(),
        )

    _run(work)
    click.echo(f"terminal {terminal_no} ({kind}) registered for merchant {merchant_no}")


@terminals.command("kind")
@click.argument("terminal_no")
@click.argument("kind", type=click.Choice([k.value for k in TerminalKind]))
def terminals_kind(terminal_no: str, kind: str) -> None:
    """Change what a terminal may do (only counters and kiosks load purses)."""

    async def work(session: AsyncSession) -> None:
        await service.set_terminal_kind(session, terminal_no, TerminalKind(kind), actor=_actor())

    _run(work)
    click.echo(f"terminal {terminal_no} is a {kind}")


@terminals.command("status")
@click.argument("terminal_no")
@click.argument("status", type=click.Choice([s.value for s in TerminalStatus]))
def terminals_status(terminal_no: str, status: str) -> None:
    """Activate, suspend or retire a terminal (suspension ends its sessions)."""

    async def work(session: AsyncSession) -> None:
        await access.set_terminal_status(
            session, terminal_no, TerminalStatus(status), actor=_actor()
        )

    _run(work)
    click.echo(f"terminal {terminal_no} is {status}")


@terminals.command("list")
@click.option("--merchant", "merchant_no", default=None)
def terminals_list(merchant_no: str | None) -> None:
    """List terminals with the list versions they last reported."""

    async def work(session: AsyncSession) -> list[str]:
        return [
            f"{t.terminal_no}  {t.psam_no}  {t.merchant_no}  {t.kind.value:9}  {t.status.value:9}  "
            f"blacklist v{t.blacklist_version}  params v{t.params_version}"
            for t in await service.list_terminals(session, merchant_no)
        ]

    for line in _run(work):
        click.echo(line)


@terminals.command("param")
@click.argument("table", type=click.Choice(["fares", "concessions", "transfer", "parking"]))
@click.argument("key")
@click.argument("values", nargs=-1, required=True)
def terminals_param(table: str, key: str, values: tuple[str, ...]) -> None:
    """Set a parameter entry, e.g. ``fares bus:default fare=200``; prints the new list version."""
    parsed: dict[str, int] = {}
    for item in values:
        name, _, number = item.partition("=")
        if not name or not number.isdigit():
            raise click.BadParameter(f"{item!r}: expected name=integer")
        parsed[name] = int(number)

    async def work(session: AsyncSession) -> int:
        return await lists.set_parameter(session, table, key, parsed, actor=_actor())

    click.echo(f"parameters at version {_run(work)}")
