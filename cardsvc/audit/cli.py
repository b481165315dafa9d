"""``cardsvc audit verify``."""

from __future__ import annotations

import click

from cardsvc.audit import service
from cardsvc.clitools import run_async
from cardsvc.resources import open_resources
from cardsvc.settings import get_settings


@click.group()
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("verify")
def verify() -> None:
    """Recompute the chain; exit 1 at the first entry that does not prove out."""

    async def go() -> service.VerifyResult:
        async with open_resources(get_settings()) as resources, resources.sessions() as session:
            return await service.verify(session)

    result = run_async(go)
    if not result.ok:
        click.echo(
            f"audit chain BROKEN at entry {result.first_bad_seq}: {result.problem}", err=True
        )
        raise SystemExit(1)
    click.echo(f"audit chain intact: {result.entries} entries, head {result.head_hash}")
