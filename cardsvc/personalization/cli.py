"""``cardsvc counter``: what the counter PC does with its reader (personalize, read)."""

from __future__ import annotations

import click

from cardsvc.cli import run_async
from cardsvc.db import unit_of_work
from cardsvc.errors import DomainError
from cardsvc.personalization import files
from cardsvc.personalization.service import PersoResult, personalize
from cardsvc.resources import open_resources
from cardsvc.settings import get_settings
from cardsvc.staff import service as staff_service
from cardsvc.staff.auth import Role


@click.group()
def counter() -> None:
    """Counter work with a PC/SC reader."""


@counter.command("personalize")
@click.option(
    "--reader", "reader_name", default=None, help="PC/SC reader name (default: the only one)."
)
@click.option("--application", "application_id", type=int, required=True)
@click.option("--user", required=True, help="Counter operator signing in.")
@click.password_option("--password", envvar="CARDSVC_STAFF_PASSWORD", confirmation_prompt=False)
def personalize_cmd(reader_name: str | None, application_id: int, user: str, password: str) -> None:
    """Personalize the blank card in the reader for an application in production (resumable)."""
    from cardsvc.reader.pcsc import PcscLink

    async def go() -> PersoResult:
        settings = get_settings()
        async with open_resources(settings) as resources:
            async with unit_of_work(resources.sessions) as session:
                principal = await staff_service.authenticate(session, settings, user, password)
            if not principal.roles & {Role.counter_operator, Role.supervisor}:
                raise click.ClickException(
                    "personalization needs the counter operator or supervisor role"
                )
            with PcscLink(reader_name, wait=10.0) as link:
                return await personalize(
                    resources.sessions,
                    resources.hsm,
                    settings,
                    link,
                    application_id,
                    reader=reader_name or "default",
                    actor=principal.username,
                )

    try:
        result = run_async(go)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(
        f"card {result.card_no[:4]}********{result.card_no[-4:]} personalized on chip {result.chip_serial}: "
        f"{result.apdu_count} APDUs in {result.seconds:.2f} s{' (resumed)' if result.resumed else ''}"
    )


@counter.command("read")
@click.option("--reader", "reader_name", default=None)
def read(reader_name: str | None) -> None:
    """Show what the card in the reader holds (no keys needed)."""
    from cardsvc.reader.pcsc import PcscLink
    from cardsvc.reader.purse import read_card

    try:
        with PcscLink(reader_name, wait=10.0) as link:
            snap = read_card(link)
    except DomainError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(f"card number  {snap.card_no}")
    click.echo(f"balance      {snap.balance / 100:.2f} yuan")
    click.echo(f"counters     offline {snap.offline_counter}, online {snap.online_counter}")
    click.echo(f"card type    {snap.ef0016[0]:02X}")
    click.echo(f"holder       {files.decode_text(snap.ef0016[2:22], 'gbk')}")
    if snap.ef05 is not None:
        click.echo(f"SS card no.  {files.decode_text(snap.ef05[:9], 'ascii')}")
