"""``cardsvc audit seal`` and ``cardsvc audit verify``."""

from __future__ import annotations

import click

from cardsvc.audit import service
from cardsvc.clitools import run_async
from cardsvc.db import read_sessions
from cardsvc.resources import open_resources
from cardsvc.settings import get_settings


@click.group()
def audit() -> None:
    """The audit trail, chained and keyed by the HSM."""


@audit.command("seal")
def seal() -> None:
    """Seal the entries written so far (a running API does this within seconds)."""

    async def go() -> int:
        async with open_resources(get_settings()) as resources:
            return await service.seal(resources.sessions, resources.hsm)

    click.echo(f"{run_async(go)} entries sealed")


@audit.command("verify")
def verify() -> None:
    """Seal what is pending, prove every entry's MAC with the HSM and compare the end of the trail
    with the head the HSM anchored; exit 1 at the first entry that does not prove out."""

    async def go() -> service.VerifyResult:
        async with open_resources(get_settings()) as resources:
            return await service.verify(
                resources.sessions, read_sessions(resources.engine), resources.hsm
            )

    result = run_async(go)
    if not result.ok:
        click.echo(
            f"audit chain BROKEN at entry {result.first_bad_seq}: {result.problem}", err=True
        )
        raise SystemExit(1)
    click.echo(
        f"audit chain intact: {result.entries} entries, anchored in the HSM at entry "
        f"{result.anchored_seq}, head {result.head_mac}"
        + (f"; {result.pending} entries not sealed yet" if result.pending else "")
    )
