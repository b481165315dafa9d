"""``cardsvc payouts``: merchants' cycles and bank details, and the payouts of a day
(docs/payouts.md). Changes are audited with the actor ``cli:<user>``."""

from __future__ import annotations

import getpass
from datetime import date

import click
from pydantic import ValidationError

from cardsvc.clitools import run_async
from cardsvc.db import unit_of_work
from cardsvc.resources import open_storage
from cardsvc.settings import get_settings
from settlement.payouts import service
from settlement.payouts.models import Cycle
from settlement.payouts.repository import PayoutLine
from settlement.payouts.schemas import PayeeIn, PayeeOut


def _day(_ctx: click.Context, _param: click.Parameter, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def describe(payee: PayeeOut) -> str:
    cycle = payee.cycle.value + (f" {payee.cycle_day}" if payee.cycle_day else "")
    bank = (
        "HELD (no bank details)"
        if payee.held
        else f"{payee.bank_name} / {payee.bank_branch} / {payee.account_no} / {payee.account_holder}"
    )
    return f"{payee.merchant_no}  {cycle:<10}  {bank}  {payee.merchant_name}"


@click.group()
def payouts() -> None:
    """Merchants' settlement cycles, bank details and payouts."""


@payouts.command("set-payee")
@click.argument("merchant_no")
@click.option("--cycle", type=click.Choice([c.value for c in Cycle]), default=Cycle.daily.value)
@click.option("--day", "cycle_day", type=int, default=None,
              help="Weekly: 1 (Monday) to 7; monthly: 1 to 31 (past the month's end: its last day).")  # fmt: skip
@click.option("--bank-name", default=None)
@click.option("--branch", "bank_branch", default=None)
@click.option("--account", "account_no", default=None)
@click.option("--holder", "account_holder", default=None)
def set_payee_command(
    merchant_no: str,
    cycle: str,
    cycle_day: int | None,
    bank_name: str | None,
    bank_branch: str | None,
    account_no: str | None,
    account_holder: str | None,
) -> None:
    """Set MERCHANT_NO's cycle and bank details (all four, or none: its payouts are held)."""
    if len(merchant_no) != 15 or not merchant_no.isdigit():
        raise click.BadParameter("a merchant number is 15 digits")
    try:
        body = PayeeIn(
            cycle=Cycle(cycle), cycle_day=cycle_day, bank_name=bank_name,
            bank_branch=bank_branch, account_no=account_no, account_holder=account_holder,
        )  # fmt: skip
    except ValidationError as exc:
        raise click.BadParameter("; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )) from None  # fmt: skip
    actor = f"cli:{getpass.getuser()}"

    async def go() -> PayeeOut:
        async with (
            open_storage(get_settings()) as storage,
            unit_of_work(storage.sessions) as session,
        ):
            return await service.set_payee(session, merchant_no, body, actor=actor)

    click.echo(describe(run_async(go)))


@payouts.command("payees")
def payees_command() -> None:
    """Every merchant's cycle and bank details, by merchant number."""

    async def go() -> list[PayeeOut]:
        async with open_storage(get_settings()) as storage, storage.sessions() as session:
            return await service.list_payees(session)

    for payee in run_async(go):
        click.echo(describe(payee))


@payouts.command("list")
@click.option("--date", "day", required=True, callback=_day, help="Clearing date (YYYY-MM-DD).")
def list_command(day: date) -> None:
    """The payouts of a clearing date, by reference."""

    async def go() -> list[PayoutLine]:
        async with open_storage(get_settings()) as storage, storage.sessions() as session:
            return await service.day_payouts(session, day)

    found = run_async(go)
    if not found:
        click.echo(f"no payout on {day.isoformat()}")
    for p in found:
        click.echo(f"{p.reference}  {p.status.value:<9}  {p.amount:>12}  {p.merchant_name}")
