"""``cardsvc bill-recon``: send a closed day's reconciliation files to the billers, and show
where each stands (docs/bills.md §11)."""

from __future__ import annotations

from datetime import date

import click

from cardsvc.bills.adapter import BillerClient, biller_http
from cardsvc.clitools import run_async
from cardsvc.resources import open_resources, open_storage
from cardsvc.settings import get_settings
from settlement.billrecon import service
from settlement.billrecon.models import BillReconciliation


@click.group("bill-recon")
def bill_recon() -> None:
    """Daily reconciliation with each biller: send a day's files, show their state."""


def _day(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


@bill_recon.command("run")
@click.option("--date", "day", required=True, callback=_day, help="Clearing date (YYYY-MM-DD).")
@click.option("--biller", "code", default=None, help="One biller's code only.")
def run_command(day: date, code: str | None) -> None:
    """Build the file of closed clearing date DAY for every biller (or one) and send it now,
    also when it was sent before (the biller answers afresh): a file whose totals are not the
    ledger's is built again and, still unbalanced, never sent. One line per biller:
    `<code> <date> <status>: <detail>`."""

    async def go() -> list[service.Sent]:
        settings = get_settings()
        async with open_resources(settings) as res, biller_http() as http:
            client = BillerClient(
                http, res.hsm, settings.bills_channel_id, settings.bill_recon_timeout_seconds
            )
            return await service.reconcile(
                res.sessions, client, settings.bills_channel_id, day, code
            )

    for sent in run_async(go):
        click.echo(f"{sent.biller_code} {sent.day.isoformat()} {sent.status.value}: {sent.detail}")


def _line(row: BillReconciliation) -> str:
    retry = f", next attempt {row.next_attempt_at.isoformat()}" if row.next_attempt_at else ""
    error = f", last error: {row.last_error}" if row.last_error else ""
    return (
        f"{row.clearing_date.isoformat()} {row.biller_code} {row.status.value}: "
        f"{row.count} line(s), {row.total} fen (ledger {row.ledger_count}, {row.ledger_total} fen), "
        f"{row.attempts} attempt(s), {row.disagreements} disagreement(s){retry}{error}"
    )


@bill_recon.command("status")
@click.option("--date", "day", default=None, callback=_day, help="One clearing date only.")
def status_command(day: date | None) -> None:
    """Each biller's reconciliation of the day named (or the latest 100)."""

    async def go() -> list[BillReconciliation]:
        async with open_storage(get_settings()) as storage, storage.sessions() as session:
            if day is not None:
                return await service.day_status(session, day)
            return await service.latest(session)

    rows = run_async(go)
    if not rows:
        click.echo("no reconciliation yet")
    for row in rows:
        click.echo(_line(row))
