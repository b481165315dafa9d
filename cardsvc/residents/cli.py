"""``cardsvc residents``: register and find residents at the counter (as POST /residents and
POST /residents/lookup). Output is masked: the ID number and the name never reach the terminal."""

from __future__ import annotations

from datetime import datetime

import click
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.residents import service
from cardsvc.residents.endpoints import COUNTER_ROLES, resident_out
from cardsvc.residents.schemas import ResidentCreate, ResidentLookup, ResidentOut
from cardsvc.resources import Resources
from cardsvc.staff.auth import StaffPrincipal
from cardsvc.staff.cli import parse_input, run_as_staff, staff_options


@click.group()
def residents() -> None:
    """Residents (cardholders)."""


def _show(out: ResidentOut) -> str:
    return (
        f"resident {out.id}: {out.resident_id} {out.name}, {out.sex}, "
        f"phone {out.phone}, {out.address}"
    )


@residents.command("register")
# Prompted when omitted, so a clerk can keep the ID number and the name out of shell history.
@click.option("--resident-id", prompt=True, help="GB 11643 resident ID number.")
@click.option("--name", prompt=True, help="Name as on the ID card.")
@click.option("--sex", type=click.Choice(["M", "F"]), default=None, help="Checked against the ID.")
@click.option(
    "--birth-date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="YYYY-MM-DD, checked against the ID.",
)
@click.option("--phone", required=True)
@click.option("--address", required=True)
@staff_options
def register(
    resident_id: str,
    name: str,
    sex: str | None,
    birth_date: datetime | None,
    phone: str,
    address: str,
    user: str,
    password: str,
) -> None:
    """Register a resident (counter operator, supervisor)."""
    body = parse_input(
        ResidentCreate,
        resident_id=resident_id.strip(),
        name=name,
        sex=sex,
        birth_date=birth_date.date() if birth_date else None,
        phone=phone,
        address=address,
    )

    async def work(
        resources: Resources, session: AsyncSession, principal: StaffPrincipal
    ) -> ResidentOut:
        resident = await service.register(
            session,
            resources.hsm,
            service.ResidentIn(
                body.resident_id, body.name, body.phone, body.address, body.sex, body.birth_date
            ),
            actor=principal.username,
            today=resources.settings.local_date(clock.now()),
        )
        return await resident_out(resources.hsm, resident, reveal=False)

    out = run_as_staff(user, password, COUNTER_ROLES, work)
    click.echo(f"registered {_show(out)}")


@residents.command("find")
@click.option("--resident-id", prompt=True, help="GB 11643 resident ID number.")
@staff_options
def find(resident_id: str, user: str, password: str) -> None:
    """Find a resident by ID number; prints masked data (counter operator, supervisor)."""
    body = parse_input(ResidentLookup, resident_id=resident_id.strip())

    async def work(
        resources: Resources, session: AsyncSession, principal: StaffPrincipal
    ) -> ResidentOut:
        resident = await service.lookup(session, resources.hsm, body.resident_id)
        return await resident_out(resources.hsm, resident, reveal=False)

    click.echo(_show(run_as_staff(user, password, COUNTER_ROLES, work)))
