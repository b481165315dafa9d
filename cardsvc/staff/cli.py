"""``cardsvc staff``: the first administrator account, and CLI sign-in for counter commands."""

from __future__ import annotations

import click

from cardsvc.cli import run_async
from cardsvc.db import unit_of_work
from cardsvc.resources import open_resources
from cardsvc.settings import get_settings
from cardsvc.staff import service
from cardsvc.staff.auth import Role


@click.group()
def staff() -> None:
    """Staff accounts."""


@staff.command("create-admin")
@click.option("--username", required=True)
@click.password_option(envvar="CARDSVC_ADMIN_PASSWORD")
def create_admin(username: str, password: str) -> None:
    """Create an administrator account (the first account of a new installation)."""

    async def go() -> None:
        async with (
            open_resources(get_settings()) as resources,
            unit_of_work(resources.sessions) as session,
        ):
            await service.create_staff(
                session,
                username=username,
                password=password,
                roles=[Role.administrator],
                actor="cli",
            )

    run_async(go)
    click.echo(f"administrator {username} created")


@staff.command("create")
@click.option("--username", required=True)
@click.option(
    "--role", "roles", multiple=True, required=True, type=click.Choice([r.value for r in Role])
)
@click.password_option(envvar="CARDSVC_STAFF_NEW_PASSWORD")
def create(username: str, roles: tuple[str, ...], password: str) -> None:
    """Create a staff account with the given roles."""

    async def go() -> None:
        async with (
            open_resources(get_settings()) as resources,
            unit_of_work(resources.sessions) as session,
        ):
            await service.create_staff(
                session,
                username=username,
                password=password,
                roles=[Role(r) for r in roles],
                actor="cli",
            )

    run_async(go)
    click.echo(f"staff {username} created with roles {', '.join(roles)}")
