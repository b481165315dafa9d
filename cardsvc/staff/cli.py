"""``cardsvc staff``: the first administrator account, and the sign-in of counter commands.

Every counter command (``residents``, ``applications``, ``cards``, ``counter``) signs its staff user
in with :func:`staff_options` and :func:`signed_in`, admits the same roles as the REST endpoint it
mirrors, calls the same service, commits once through ``unit_of_work``, and reports a domain error
as ``error: <Name>: <detail>`` with exit status 1 (:func:`run_domain`).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

import click
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.clitools import run_async
from cardsvc.db import read_sessions, unit_of_work
from cardsvc.errors import DomainError, ValidationFailed
from cardsvc.resources import Resources, open_resources
from cardsvc.settings import get_settings
from cardsvc.staff import service
from cardsvc.staff.auth import Role, StaffPrincipal, check_roles

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])

# Raised (exit status 1) for every domain refusal; click's own usage errors exit with 2.
DOMAIN_ERROR_EXIT = 1


def staff_options(command: F) -> F:
    """``--user`` and ``--password`` (prompted, or ``CARDSVC_STAFF_PASSWORD``) of a counter command."""
    command = click.password_option(
        "--password",
        envvar="CARDSVC_STAFF_PASSWORD",
        confirmation_prompt=False,
        help="Staff password (prompted when CARDSVC_STAFF_PASSWORD is not set).",
    )(command)
    return click.option("--user", required=True, help="Staff username signing in.")(command)


@asynccontextmanager
async def signed_in(
    resources: Resources, username: str, password: str, roles: Iterable[Role]
) -> AsyncIterator[tuple[AsyncSession, StaffPrincipal]]:
    """One unit of work that starts by checking the password and the roles (as the API does)."""
    async with unit_of_work(resources.sessions) as session:
        try:
            principal = await service.authenticate(
                read_sessions(resources.engine),
                session,
                resources.settings,
                resources.cache,
                username,
                password,
            )
        except service.LoginFailed:
            # The failure count must survive the refusal, or the lockout could be bypassed by
            # guessing passwords here instead of at POST /staff/login (which does the same).
            await session.commit()
            raise
        yield session, check_roles(principal, roles)


def fail(exc: DomainError) -> NoReturn:
    """Print ``error: <Name>: <detail>`` on stderr and exit 1."""
    click.echo(f"error: {type(exc).__name__}: {exc.detail}", err=True)
    sys.exit(DOMAIN_ERROR_EXIT)


def run_domain(make: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; a domain error ends the command through :func:`fail`."""
    try:
        return run_async(make)
    except DomainError as exc:
        fail(exc)


def run_as_staff(
    username: str,
    password: str,
    roles: Iterable[Role],
    work: Callable[[Resources, AsyncSession, StaffPrincipal], Awaitable[T]],
) -> T:
    """Sign in, run ``work`` in the same unit of work (one commit), report domain errors."""

    async def go() -> T:
        async with (
            open_resources(get_settings()) as resources,
            signed_in(resources, username, password, roles) as (session, principal),
        ):
            return await work(resources, session, principal)

    return run_domain(go)


def parse_input(schema: type[M], **values: object) -> M:
    """Command-line values checked by the API's own request schema (same bounds, same patterns);
    a value it refuses ends the command as ``error: ValidationFailed: ...``."""
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'input'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        fail(ValidationFailed(problems))


@click.group()
def staff() -> None:
    """Staff accounts."""


def _create_staff(username: str, password: str, roles: list[Role]) -> None:
    """Create an account from the command line (no one signs in: the actor is ``cli``)."""

    async def go() -> None:
        async with (
            open_resources(get_settings()) as resources,
            unit_of_work(resources.sessions) as session,
        ):
            await service.create_staff(
                session, username=username, password=password, roles=roles, actor="cli"
            )

    run_async(go)


@staff.command("create-admin")
@click.option("--username", required=True)
@click.password_option(envvar="CARDSVC_ADMIN_PASSWORD")
def create_admin(username: str, password: str) -> None:
    """Create an administrator account (the first account of a new installation)."""
    _create_staff(username, password, [Role.administrator])
    click.echo(f"administrator {username} created")


@staff.command("create")
@click.option("--username", required=True)
@click.option(
    "--role", "roles", multiple=True, required=True, type=click.Choice([r.value for r in Role])
)
@click.password_option(envvar="CARDSVC_STAFF_NEW_PASSWORD")
def create(username: str, roles: tuple[str, ...], password: str) -> None:
    """Create a staff account with the given roles."""
    _create_staff(username, password, [Role(r) for r in roles])
    click.echo(f"staff {username} created with roles {', '.join(roles)}")
