"""``cardsvc cards``: the card jobs, and ``cardsvc counter``: counter work from the command line."""

from __future__ import annotations

import click

from cardsvc.cards import tasks
from cardsvc.cli import run_async
from cardsvc.resources import open_resources
from cardsvc.settings import get_settings


@click.group()
def cards() -> None:
    """Card jobs."""


@cards.command("release-balances")
def release_balances() -> None:
    """Move balances of replaced/cancelled cards whose waiting period is over (idempotent)."""

    async def go() -> tasks.ReleaseReport:
        settings = get_settings()
        async with open_resources(settings) as resources:
            return await tasks.release_balances(resources.sessions, settings)

    report = run_async(go)
    click.echo(
        f"moved {report.moved} balances ({report.amount} fen); {report.zero} empty; {report.waiting_for_card} wait for their new card"
    )


@cards.command("expire-due")
def expire_due() -> None:
    """Expire active cards past their expiry date."""

    async def go() -> int:
        settings = get_settings()
        async with open_resources(settings) as resources:
            return await tasks.expire_due(resources.sessions, settings)

    click.echo(f"expired {run_async(go)} cards")
