"""What every command of the ``cardsvc`` command line shares: running a coroutine, and the one
way a command reports a refusal (``error: <Name>: <detail>`` on stderr, exit status 1)."""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import click
import sqlalchemy.exc
from pydantic import ValidationError

from cardsvc.errors import DomainError
from cardsvc.hsm import HsmError
from cardsvc.outages import outage

T = TypeVar("T")

# The exit status of every refusal; click's own usage errors exit with 2.
REFUSED_EXIT = 1


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine for a CLI command."""

    async def runner() -> T:
        return await make()

    return asyncio.run(runner())


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


def refusal(exc: BaseException) -> tuple[str, str] | None:
    """How a command reports ``exc`` (name, detail), or None when it is a bug."""
    if isinstance(exc, DomainError):
        return type(exc).__name__, exc.detail
    down = outage(exc)
    if down is not None:
        return "DependencyUnavailable", f"the {down} is unavailable: {_first_line(exc)}"
    if isinstance(exc, HsmError):
        return type(exc).__name__, exc.message
    if isinstance(exc, ValidationError):
        # Settings read from the environment (the values, which may be secrets, are not shown).
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        return "SettingsRefused", problems
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        # Statement values are never in the text (the engines hide them).
        return "DatabaseError", f"{_first_line(exc.orig or exc)} (is the schema upgraded?)"
    return None


def refuse(exc: BaseException) -> NoReturn:
    """Print ``exc`` as ``error: <Name>: <detail>`` on stderr and exit 1; a bug prints
    ``error: InternalError`` (with the traceback when ``CARDSVC_LOG_LEVEL=DEBUG``)."""
    found = refusal(exc)
    if found is None:
        if os.environ.get("CARDSVC_LOG_LEVEL", "").upper() == "DEBUG":
            traceback.print_exception(exc, file=sys.stderr)
        found = (
            "InternalError",
            f"{type(exc).__name__} (a bug; CARDSVC_LOG_LEVEL=DEBUG shows where)",
        )
    name, detail = found
    click.echo(f"error: {name}: {detail}", err=True)
    sys.exit(REFUSED_EXIT)


class CommandLine(click.Group):
    """The root group: whatever a command raises ends it through :func:`refuse`, never as a
    traceback; click's own exits, aborts and usage errors pass unchanged."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            refuse(exc)
