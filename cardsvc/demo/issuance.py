"""Demo step (``cardsvc demo``): issue one card end to end on a virtual card, in-process link."""

from __future__ import annotations

import secrets

import click

from cardsvc import clock
from cardsvc.applications import service as applications
from cardsvc.db import read_sessions, unit_of_work
from cardsvc.personalization import files
from cardsvc.personalization.local import personalize
from cardsvc.reader.link import InProcessLink
from cardsvc.reader.purse import read_card
from cardsvc.residents import service as residents
from cardsvc.residents.idnumber import check_char, mask_resident_id
from cardsvc.resources import Resources
from cardsvc.staff import repository as staff_repo
from cardsvc.staff import service as staff
from cardsvc.staff.auth import Role
from terminals.devices.card import make_blank_card


async def step_issue_card(resources: Resources) -> None:
    settings = resources.settings
    suffix = secrets.token_hex(3)
    first17 = f"32110219{secrets.randbelow(30) + 60:02d}0512{secrets.randbelow(900) + 100:03d}"
    resident_id = first17 + check_char(first17)
    async with unit_of_work(resources.sessions) as session:
        for username, role in (
            ("demo-operator", Role.counter_operator),
            ("demo-supervisor", Role.supervisor),
        ):
            if await staff_repo.by_username(session, username) is None:
                await staff.create_staff(
                    session,
                    username=username,
                    password=secrets.token_urlsafe(16),
                    roles=[role],
                    actor="demo",
                )
        resident = await residents.register(
            session,
            resources.hsm,
            residents.ResidentIn(resident_id, "陈小春", "13800000000", "泰州市海陵区府前路1号"),
            actor="demo-operator",
            today=settings.local_date(clock.now()),
        )
    async with unit_of_work(resources.sessions) as session:
        application = await applications.submit(
            read_sessions(resources.engine), session, resources.hsm, settings,
            resident_id=resident.id, card_type=None, actor="demo-operator",
        )  # fmt: skip
    click.echo(
        f"  resident {mask_resident_id(resident_id)} registered; application {application.id} submitted by demo-operator"
    )
    async with unit_of_work(resources.sessions) as session:
        await applications.approve(session, application.id, actor="demo-supervisor")
        card = await applications.start_production(
            session, settings, application.id, actor="demo-operator"
        )
    click.echo(
        f"  approved by demo-supervisor; card number {card.card_no[:4]}********{card.card_no[-4:]} allocated"
    )
    blank = make_blank_card(bytes.fromhex("DE") + secrets.token_bytes(4) + bytes.fromhex(suffix))
    with InProcessLink(blank) as link:
        result = await personalize(
            resources,
            link,
            application.id,
            reader="in-process",
            actor="demo-operator",
        )
        snapshot = read_card(link)
    click.echo(
        f"  personalized chip {result.chip_serial}: {result.apdu_count} APDUs in {result.seconds:.2f} s, keys proved by the HSM"
    )
    async with unit_of_work(resources.sessions) as session:
        issued = await applications.handover(
            session, settings, application.id, actor="demo-operator"
        )
    holder = files.decode_text(snapshot.ef0016[2:22], "gbk")
    click.echo(
        f"  handed over: card {issued.status.value} ({issued.card_type.value}), chip reads back holder {holder[0]}* and ASN ok: {snapshot.card_no == issued.card_no}"
    )
    if snapshot.card_no != issued.card_no:
        raise click.ClickException("the card does not read back its number")
