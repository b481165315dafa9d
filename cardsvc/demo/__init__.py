"""``cardsvc demo``: the main job end to end on the embedded defaults.

SQLite under the demo's var directory, the in-process cache and an hsm-sim child process with the
development key set. This package is the one tree of demo scenarios (docs/architecture.md): each
scenario is a module here and a step of :func:`demo_steps`; it may use every package and the
simulated terminals of ``terminals/devices``, and no domain imports it. The demo prints what
happens in words a counter operator or finance clerk would recognise, and exits 0 when every step
succeeded.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import click
from sqlalchemy import text

from cardsvc import migrate
from cardsvc.audit import service as audit
from cardsvc.db import read_sessions
from cardsvc.logging import configure_logging
from cardsvc.resources import Resources, open_resources
from cardsvc.settings import Mode, Settings

DemoStep = Callable[[Resources], Awaitable[None]]


async def step_infrastructure(resources: Resources) -> None:
    async with resources.engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    await resources.cache.ping()
    await resources.hsm.ping()
    head = await resources.hsm.audit_head()
    click.echo(
        f"  database schema at revision {version}; cache answers; "
        f"HSM answers (audit entry {head.seq})"
    )


async def step_audit_trail(resources: Resources) -> None:
    result = await audit.verify(resources.sessions, read_sessions(resources.engine), resources.hsm)
    if not result.ok:
        raise click.ClickException(
            f"audit trail broken at entry {result.first_bad_seq}: {result.problem}"
        )
    click.echo(
        f"  {result.entries} staff actions sealed by the HSM and proved, "
        f"anchored in its own log at entry {result.anchored_seq}"
    )


def demo_steps() -> list[tuple[str, DemoStep]]:
    from cardsvc.demo.bills_day import step_bills
    from cardsvc.demo.issuance import step_issue_card
    from cardsvc.demo.online_day import step_online_day
    from cardsvc.demo.settlement_day import step_settlement
    from cardsvc.demo.terminal_day import step_terminal_day

    return [
        ("Infrastructure", step_infrastructure),
        (
            "Issue a card: resident, application, approval, personalization, handover",
            step_issue_card,
        ),
        ("A bus and taxi day: fares on the cards, offline uploads, ledger", step_terminal_day),
        ("Online: a counter load, a parking exit and a fuel purchase", step_online_day),
        (
            "Utility bills: a water bill in cash at the counter, one from the online account",
            step_bills,
        ),
        ("The audit trail: every staff action sealed in the HSM", step_audit_trail),
        ("The nightly settlement of the day: clearing, postings, files, manifest", step_settlement),
    ]


def run_demo(var_dir: str) -> None:
    settings = Settings(
        mode=Mode.development,
        var_dir=Path(var_dir),
        database_url=os.environ.get("CARDSVC_DEMO_DATABASE_URL", ""),
        hsm_url="spawn",
        redis_url=None,
        log_json=False,
        log_level="WARNING",
    )
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    # The demo speaks in its own lines; the services' info logs would bury them.
    configure_logging(settings.log_level, settings.log_json)
    click.echo(f"Citizen card demo: database {settings.database_url}")
    migrate.upgrade(settings.database_url)

    async def main() -> None:
        async with open_resources(settings) as resources:
            for number, (title, step) in enumerate(demo_steps(), start=1):
                click.echo(f"[{number}] {title}")
                await step(resources)
        click.echo("Demo finished: every step succeeded.")

    asyncio.run(main())
