"""``cardsvc applications``: the counter's application work without the web UI.

Each command mirrors a route of ``cardsvc/applications/endpoints.py``: the same roles, the same
service call, so the four-eyes rule (a supervisor other than the submitter decides) holds here too.
"""

from __future__ import annotations

import click
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.applications import service
from cardsvc.applications.endpoints import (
    COUNTER_ROLES,
    OPERATOR_ROLES,
    READER_ROLES,
    SUPERVISOR_ROLES,
    application_out,
)
from cardsvc.applications.models import ApplicationStatus
from cardsvc.applications.schemas import ApplicationCreate, ApplicationOut, RejectBody
from cardsvc.cards.models import Card, CardType
from cardsvc.db import read_sessions
from cardsvc.resources import Resources
from cardsvc.staff.auth import StaffPrincipal
from cardsvc.staff.cli import parse_input, run_as_staff, staff_options


@click.group()
def applications() -> None:
    """Card applications: submit, decide, produce, hand over."""


def describe(out: ApplicationOut) -> str:
    """One line per application, as the counter reads it."""
    line = (
        f"application {out.id}: {out.kind.value} {out.card_type.value} card for resident "
        f"{out.resident_id}, {out.status.value}; submitted by {out.submitted_by}"
    )
    if out.decided_by:
        line += f", decided by {out.decided_by}"
    if out.reject_reason:
        line += f" (reason: {out.reject_reason})"
    if out.card_no:
        line += f"; card {out.card_no}"
    return line


@applications.command("submit")
@click.option("--resident", "resident", type=int, required=True, help="The resident's record id.")
@click.option(
    "--card-type",
    type=click.Choice([t.value for t in CardType]),
    default=None,
    help="Default: senior from the birth date, else standard.",
)
@staff_options
def submit(resident: int, card_type: str | None, user: str, password: str) -> None:
    """Submit a new-card application (counter operator)."""
    body = parse_input(ApplicationCreate, resident_id=resident, card_type=card_type)

    async def work(
        resources: Resources, session: AsyncSession, principal: StaffPrincipal
    ) -> ApplicationOut:
        application = await service.submit(
            read_sessions(resources.engine),
            session,
            resources.hsm,
            resources.settings,
            resident_id=body.resident_id,
            card_type=body.card_type,
            actor=principal.username,
        )
        return await application_out(session, application)

    out = run_as_staff(user, password, OPERATOR_ROLES, work)
    click.echo(f"submitted {describe(out)}")


@applications.command("approve")
@click.argument("application_id", type=int)
@staff_options
def approve(application_id: int, user: str, password: str) -> None:
    """Approve (a supervisor other than the submitter)."""

    async def work(
        resources: Resources, session: AsyncSession, principal: StaffPrincipal
    ) -> ApplicationOut:
        application = await service.approve(session, application_id, actor=principal.username)
        return await application_out(session, application)

    out = run_as_staff(user, password, SUPERVISOR_ROLES, work)
    click.echo(f"approved {describe(out)}")


@applications.command("reject")
@click.argument("application_id", type=int)
@click.option("--reason", required=True, help="Why (kept with the application).")
@staff_options
def reject(application_id: int, reason: str, user: str, password: str) -> None:
    """Reject (a supervisor other than the submitter)."""
    body = parse_input(RejectBody, reason=reason)

    async def work(
        resources: Resources, session: AsyncSession, principal: StaffPrincipal
    ) -> ApplicationOut:
        application = await service.reject(
            session, application_id, reason=body.reason, actor=principal.username
        )
        return await application_out(session, application)

    out = run_as_staff(user, password, SUPERVISOR_ROLES, work)
    click.echo(f"rejected {describe(out)}")


@applications.command("production")
@click.argument("application_id", type=int)
@staff_options
def production(application_id: int, user: str, password: str) -> None:
    """Start production: allocate the card number (counter operator, supervisor)."""

    async def work(resources: Resources, session: AsyncSession, principal: StaffPrincipal) -> Card:
        return await service.start_production(
            session, resources.settings, application_id, actor=principal.username
        )

    card = run_as_staff(user, password, COUNTER_ROLES, work)
    click.echo(
        f"application {application_id} in production: card {card.card_no} "
        f"({card.card_type.value}) waits for personalization"
    )


@applications.command("handover")
@click.argument("application_id", type=int)
@staff_options
def handover(application_id: int, user: str, password: str) -> None:
    """Hand the personalized card over; it becomes active (counter operator)."""

    async def work(resources: Resources, session: AsyncSession, principal: StaffPrincipal) -> Card:
        return await service.handover(
            session, resources.settings, application_id, actor=principal.username
        )

    card = run_as_staff(user, password, OPERATOR_ROLES, work)
    click.echo(
        f"application {application_id} issued: card {card.card_no} {card.status.value}, "
        f"valid until {card.expires_on}"
    )


@applications.command("list")
@click.option(
    "--status",
    type=click.Choice([s.value for s in ApplicationStatus]),
    default=None,
    help="Only applications in this status.",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@staff_options
def list_(status: str | None, limit: int, user: str, password: str) -> None:
    """Applications, newest first (counter operator, supervisor, auditor)."""

    async def work(
        resources: Resources, session: AsyncSession, principal: StaffPrincipal
    ) -> list[ApplicationOut]:
        wanted = ApplicationStatus(status) if status else None
        return [
            await application_out(session, a) for a in await service.newest(session, wanted, limit)
        ]

    found = run_as_staff(user, password, READER_ROLES, work)
    for out in found:
        click.echo(describe(out))
    click.echo(f"{len(found)} application(s)")
