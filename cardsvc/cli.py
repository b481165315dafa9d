"""The ``cardsvc`` command line: the service, the schema, the demo and the domain commands.

Domain command groups live beside their domains and are registered here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from cardsvc.jobs import worker as jobs_worker
from cardsvc.settings import Settings, get_settings

T = TypeVar("T")


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine for a CLI command."""

    async def runner() -> T:
        return await make()

    return asyncio.run(runner())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Citizen card (市民卡) backend: issuance, terminals, payments and settlement."""


@main.command()
@click.option("--host", default=None, help="Bind address (default CARDSVC_HOST).")
@click.option("--port", type=int, default=None, help="Port (default CARDSVC_PORT).")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--no-upgrade", is_flag=True, help="Do not upgrade the schema first.")
def serve(host: str | None, port: int | None, workers: int, no_upgrade: bool) -> None:
    """Serve the HTTP API (uvicorn)."""
    import uvicorn

    from cardsvc.server import NoDelayHttpProtocol

    settings = get_settings()
    if settings.is_sqlite:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    if not no_upgrade:
        _upgrade(settings)
    uvicorn.run(
        "cardsvc.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        http=NoDelayHttpProtocol,
        log_config=None,
    )


@main.command()
@click.option("--once", is_flag=True, help="Run each job once and exit (1 if any failed).")
@click.option(
    "--job",
    "job_names",
    multiple=True,
    type=click.Choice([job.name for job in jobs_worker.JOBS]),
    help="Run only this job (repeatable; default all).",
)
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Its bind address.")
def worker(
    once: bool, job_names: tuple[str, ...], metrics_port: int | None, metrics_host: str
) -> None:
    """Run the periodic jobs (hold expiry, balance releases, card expiry) until SIGTERM/SIGINT."""
    from cardsvc.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    jobs = [job for job in jobs_worker.JOBS if not job_names or job.name in job_names]
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)
    if not once:
        run_async(lambda: jobs_worker.serve(settings, jobs))
        return
    runs = run_async(lambda: jobs_worker.run_once(settings, jobs))
    for run in runs:
        click.echo(f"{run.job}: {run.result.value}: {run.summary}")
    if any(run.result is jobs_worker.Result.failed for run in runs):
        raise SystemExit(1)


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Upgrade the schema to REVISION (default head)."""
    settings = get_settings()
    if settings.is_sqlite:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    _upgrade(settings, revision)
    click.echo(f"schema at {revision}")


def _upgrade(settings: Settings, revision: str = "head") -> None:
    """The migrations, then (at head) the daily partitions around today (PostgreSQL)."""
    from cardsvc import migrate
    from cardsvc.clearing.tasks import prepare_partitions

    migrate.upgrade(settings.database_url, revision)
    if revision == "head":
        run_async(lambda: prepare_partitions(settings))


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Downgrade the schema to REVISION (e.g. base)."""
    from cardsvc import migrate

    migrate.downgrade(get_settings().database_url, revision)


@db.command("current")
def db_current() -> None:
    """Show the schema revision."""
    from cardsvc import migrate

    migrate.current(get_settings().database_url)


@db.command("check")
def db_check() -> None:
    """Fail when the models and the migrations disagree."""
    from cardsvc import migrate

    migrate.check(get_settings().database_url)


@main.command()
@click.option(
    "--var-dir", default="var/demo", show_default=True, help="Where the demo keeps its files."
)
def demo(var_dir: str) -> None:
    """Run the main job end to end on the embedded defaults.

    SQLite, the in-process cache and an hsm-sim child process with the development key set.
    """
    from cardsvc.demo import run_demo

    run_demo(var_dir)


# (module, click group) of every domain command group.
DOMAIN_COMMANDS: tuple[tuple[str, str], ...] = (
    ("cardsvc.card_cli", "card"),  # issue 4: virtual card, reading a card
    ("cardsvc.ledger.cli", "ledger"),  # issue 6: invariant check, balances
    ("terminals.online.cli", "online"),  # issue 8: hold expiry, pending loads
    ("cardsvc.staff.cli", "staff"),  # issue 5: accounts
    ("cardsvc.audit.cli", "audit"),  # issue 5: audit chain
    ("cardsvc.residents.cli", "residents"),  # issue 5: register, find (counter CLI)
    ("cardsvc.applications.cli", "applications"),  # issue 5: submit, decide, produce, hand over
    ("cardsvc.cards.cli", "cards"),  # issue 5: balance release, expiry, card lifecycle
    ("cardsvc.personalization.cli", "counter"),  # issue 4/5: counter personalization, read
    ("terminals.registry.cli", "merchants"),  # issue 7: operators and merchants
    ("terminals.registry.cli", "terminals"),  # issue 7: terminals and parameter tables
)


def _register_domain_commands() -> None:
    import importlib

    for module_name, group_name in DOMAIN_COMMANDS:
        main.add_command(getattr(importlib.import_module(module_name), group_name))


_register_domain_commands()
