"""Composition root of the ``cardsvc`` command line: the service, the worker, the schema and the
demo, then every package's command groups (each package lists them in its ``components.py``).
"""

from __future__ import annotations

from pathlib import Path

import click

import settlement.components
import terminals.components
from cardsvc import components
from cardsvc.clitools import run_async
from cardsvc.jobs import worker as jobs_worker
from cardsvc.jobs.table import all_jobs
from cardsvc.reader.link import CardLink, VirtualCards
from cardsvc.settings import Settings, get_settings


def _open_virtual_card(state_file: Path) -> CardLink:
    from terminals.devices.cli import open_virtual_card

    return open_virtual_card(state_file)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Citizen card (市民卡) backend: issuance, terminals, payments and settlement."""
    # The simulated chip (test and demo equipment) reaches the cardsvc commands only from here.
    ctx.obj = VirtualCards(open=_open_virtual_card)


@main.command()
@click.option("--host", default=None, help="Bind address (default CARDSVC_HOST).")
@click.option("--port", type=int, default=None, help="Port (default CARDSVC_PORT).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes; /metrics reports all of them (their values live in VAR_DIR/metrics).",
)
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
    if workers > 1:
        from cardsvc.metrics import prepare_multiprocess

        # /metrics, answered by any one worker, reports the numbers of all of them.
        prepare_multiprocess(settings.var_dir / "metrics")
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
    type=click.Choice([job.name for job in all_jobs()]),
    help="Run only this job (repeatable; default all).",
)
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Its bind address.")
def worker(
    once: bool, job_names: tuple[str, ...], metrics_port: int | None, metrics_host: str
) -> None:
    """Run the periodic jobs (hold expiry, load ageing, balance releases, card expiry) until
    SIGTERM/SIGINT."""
    from cardsvc.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    jobs = [job for job in all_jobs() if not job_names or job.name in job_names]
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


for group in (
    *components.cli_groups(),
    *terminals.components.cli_groups(),
    *settlement.components.cli_groups(),
):
    main.add_command(group)
