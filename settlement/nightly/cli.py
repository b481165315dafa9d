"""``cardsvc settlement``: settle a clearing date and show where each day stands."""

from __future__ import annotations

import sys
from datetime import date

import click

from cardsvc.clitools import run_async
from cardsvc.resources import open_resources, open_storage
from cardsvc.settings import get_settings
from settlement.nightly import service
from settlement.nightly.models import STEPS


@click.group()
def settlement() -> None:
    """Nightly settlement: run a day, show its steps."""


def _day(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _print_step(done: service.StepDone) -> None:
    how = "done earlier" if done.resumed else f"{done.seconds:.2f} s"
    rate = ""
    if not done.resumed and done.seconds > 0 and done.rows:
        rate = f", {done.rows / done.seconds:,.0f} rows/s"
    click.echo(
        f"{STEPS.index(done.step) + 1}/{len(STEPS)} {done.step.value:<9} "
        f"{done.rows} row(s), {done.amount} ({how}{rate}): {done.detail}"
    )


@settlement.command("run")
@click.option("--date", "day", required=True, callback=_day, help="Clearing date (YYYY-MM-DD).")
def run_command(day: date) -> None:
    """Settle clearing date DAY (close, re-examine, clear, fees, batches, postings, files,
    report), or continue where an earlier run of it stopped. Safe to rerun: nothing posts twice
    and a settled day's files are written again byte for byte."""

    async def go() -> service.RunResult:
        async with open_resources(get_settings()) as res:
            return await service.run(res.sessions, res.settings, day, _print_step, hsm=res.hsm)

    result = run_async(go)
    click.echo(f"{day.isoformat()} {result.status.value}")


@settlement.command("status")
@click.option("--date", "day", default=None, callback=_day, help="One clearing date only.")
def status_command(day: date | None) -> None:
    """Where each settled or started day stands (the latest 14, or the day named)."""

    async def go() -> list[service.DayStatus]:
        async with open_storage(get_settings()) as storage, storage.sessions() as session:
            return await service.status(session, day)

    days = run_async(go)
    if not days:
        click.echo("no settlement run yet")
        sys.exit(0)
    for found in days:
        run = found.run
        click.echo(
            f"{run.clearing_date.isoformat()} {run.status.value} "
            f"(attempts {run.attempts}, last step {run.last_step or 'none'})"
            + (f": {run.error}" if run.error else "")
        )
        done = {s.step for s in found.steps}
        for row in found.steps:
            click.echo(f"  {row.step.value:<9} done: {row.rows} row(s), {row.amount}: {row.detail}")
        for step in STEPS:
            if step not in done:
                click.echo(f"  {step.value:<9} to do")


@settlement.command("verify")
@click.option("--date", "day", required=True, callback=_day, help="Clearing date (YYYY-MM-DD).")
def verify_command(day: date) -> None:
    """Check the files of clearing date DAY against its manifest.json: every file's size and
    SHA-256, and the manifest's MAC (verified by the HSM under the file-MAC key). Prints one line
    per file (ok, altered, missing, extra) and exits 0 only when all is intact; otherwise ends
    with `error: SettlementFilesInvalid: ...` on stderr and exit status 1 (a day without files:
    NotFound)."""

    async def go() -> service.Verification:
        async with open_resources(get_settings()) as res:
            return await service.verify_files(res.settings, res.hsm, day)

    result = run_async(go)
    click.echo(f"manifest {result.manifest.value}: {result.detail}")
    for check in result.files:
        click.echo(f"  {check.status.value:<8} {check.name}")
    if not result.ok:
        problems = result.problems()
        raise service.SettlementFilesInvalid(
            f"{day.isoformat()}: {len(problems)} problem(s): " + "; ".join(problems)
        )
    click.echo(f"{day.isoformat()} files intact: {len(result.files)} file(s)")
