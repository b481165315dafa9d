"""``cardsvc counter``: what the counter PC does with its reader (personalize, read)."""

from __future__ import annotations

from pathlib import Path

import click

from cardsvc.cards.numbers import mask_card_no
from cardsvc.errors import DomainError, Forbidden
from cardsvc.personalization import files
from cardsvc.personalization.local import PersoResult, personalize
from cardsvc.reader.link import CardLink, VirtualCards
from cardsvc.resources import open_resources
from cardsvc.settings import Mode, get_settings
from cardsvc.staff.auth import Role
from cardsvc.staff.cli import fail, run_domain, signed_in, staff_options


@click.group()
def counter() -> None:
    """Counter work with a PC/SC reader."""


# As the API's counter routes: the operator at the reader, or a supervisor standing in.
PERSONALIZE_ROLES = (Role.counter_operator, Role.supervisor)


@counter.command("personalize")
@click.option(
    "--reader", "reader_name", default=None, help="PC/SC reader name (default: the only one)."
)
@click.option(
    "--virtual-card",
    "virtual_card",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Personalize a virtual card state file in-process instead (test and demo equipment).",
)
@click.option("--application", "application_id", type=int, required=True)
@staff_options
def personalize_cmd(
    reader_name: str | None,
    virtual_card: Path | None,
    application_id: int,
    user: str,
    password: str,
) -> None:
    """Development shortcut: personalize the blank card in a reader of this machine (or a virtual
    card) for an approved application, through the same session service as the counter agent.
    Outside development it is refused: counter PCs run cardsvc-agent and hold no credential."""
    if get_settings().mode is not Mode.development:
        raise Forbidden(
            "counter PCs hold no database or HSM credential: personalize with cardsvc-agent "
            "(docs/counter-agent.md); this command is a development shortcut"
        )
    if reader_name and virtual_card:
        raise click.UsageError("choose one of --reader and --virtual-card")
    virtual_cards = click.get_current_context().find_object(VirtualCards)
    if virtual_card is not None and virtual_cards is None:
        raise click.UsageError(
            "--virtual-card needs the cardsvc command line (cardsvc counter ...)"
        )

    def open_link() -> CardLink:
        if virtual_card is not None and virtual_cards is not None:  # both or neither, see above
            # The card writes its state file on every commit, so a pulled virtual card resumes.
            return virtual_cards.open(virtual_card)
        from cardsvc.reader.pcsc import PcscLink

        return PcscLink(reader_name, wait=10.0)

    reader = f"virtual:{virtual_card.name}" if virtual_card else reader_name or "default"

    async def go() -> PersoResult:
        settings = get_settings()
        async with open_resources(settings) as resources:
            # Signing in commits on its own: personalization records its job step by step.
            async with signed_in(resources, user, password, PERSONALIZE_ROLES) as (_, principal):
                pass
            with open_link() as link:
                return await personalize(
                    resources,
                    link,
                    application_id,
                    reader=reader,
                    actor=principal.username,
                )

    result = run_domain(go)
    click.echo(
        f"card {mask_card_no(result.card_no)} personalized on chip {result.chip_serial}: "
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
        fail(exc)
    click.echo(f"card number  {snap.card_no}")
    click.echo(f"balance      {snap.balance / 100:.2f} yuan")
    click.echo(f"counters     offline {snap.offline_counter}, online {snap.online_counter}")
    click.echo(f"card type    {snap.ef0016[0]:02X}")
    click.echo(f"holder       {files.decode_text(snap.ef0016[2:22], 'gbk')}")
    if snap.ef05 is not None:
        click.echo(f"SS card no.  {files.decode_text(snap.ef05[:9], 'ascii')}")
