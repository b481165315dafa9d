"""``cardsvc fees``: fee rules from the command line (docs/fees.md). Changes are audited with the
actor ``cli:<user>``."""

from __future__ import annotations

import getpass
from datetime import date

import click
from pydantic import ValidationError

from cardsvc.clitools import run_async
from cardsvc.db import unit_of_work
from cardsvc.resources import open_storage
from cardsvc.settings import get_settings
from settlement.fees import service
from settlement.fees.schemas import FeeRuleCreate, FeeRuleOut, TierIn
from terminals.registry.models import MerchantCategory


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _day(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _tiers(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> list[TierIn]:
    out = []
    for item in value:
        start, sep, rate = item.partition(":")
        if not sep or not start.isdigit() or not rate.isdigit():
            raise click.BadParameter(f"{item!r} is not AMOUNT_FROM:RATE (two integers)")
        out.append(TierIn(amount_from=int(start), rate=int(rate)))
    return out


def describe(rule: FeeRuleOut) -> str:
    scope = (
        f"merchant {rule.merchant_no}"
        if rule.merchant_no
        else f"category {rule.category.value}"
        if rule.category
        else "every merchant"
    )
    parts = [f"#{rule.id}", scope, f"class {rule.tx_class or '*'}",
             f"from {rule.effective_from.isoformat()}"]  # fmt: skip
    if rule.effective_to:
        parts.append(f"to {rule.effective_to.isoformat()}")
    parts.append(f"per_record {rule.per_record} rate {rule.rate} daily {rule.daily}")
    if rule.min_fee is not None:
        parts.append(f"min {rule.min_fee}")
    if rule.max_fee is not None:
        parts.append(f"max {rule.max_fee}")
    if rule.tiers:
        parts.append("tiers " + ",".join(f"{t.amount_from}:{t.rate}" for t in rule.tiers))
    if rule.retired_at:
        parts.append("retired")
    return "  ".join(parts)


@click.group()
def fees() -> None:
    """Fee rules of the nightly settlement (amounts in fen, rates in 0.01 per mille)."""


@fees.command("add")
@click.option("--merchant", "merchant_no", default=None, help="A merchant's 15-digit number.")
@click.option("--category", type=click.Choice([c.value for c in MerchantCategory]), default=None)
@click.option("--class", "tx_class", default=None, help="Transaction class (default: every).")
@click.option("--from", "effective_from", required=True, callback=_day, help="First day.")
@click.option("--to", "effective_to", default=None, callback=_day, help="Last day (inclusive).")
@click.option("--per-record", type=int, default=0, help="Fen per record.")
@click.option("--rate", type=int, default=0, help="Of the amount, in 0.01 per mille (60 = 0.6‰).")
@click.option("--daily", type=int, default=0, help="Fen per line and day.")
@click.option("--min", "min_fee", type=int, default=None, help="Least fee of a record (fen).")
@click.option("--max", "max_fee", type=int, default=None, help="Most fee of a record (fen).")
@click.option("--tier", "tiers", multiple=True, callback=_tiers, help="AMOUNT_FROM:RATE, repeated.")
@click.option("--note", default="")
def add_command(
    merchant_no: str | None,
    category: str | None,
    tx_class: str | None,
    effective_from: date,
    effective_to: date | None,
    per_record: int,
    rate: int,
    daily: int,
    min_fee: int | None,
    max_fee: int | None,
    tiers: list[TierIn],
    note: str,
) -> None:
    """Add a fee rule."""
    try:
        body = FeeRuleCreate(
            merchant_no=merchant_no, category=MerchantCategory(category) if category else None,
            tx_class=tx_class, effective_from=effective_from, effective_to=effective_to,
            per_record=per_record, rate=rate, daily=daily, min_fee=min_fee, max_fee=max_fee,
            tiers=tiers, note=note,
        )  # fmt: skip
    except ValidationError as exc:
        raise click.BadParameter("; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )) from None  # fmt: skip

    async def go() -> FeeRuleOut:
        async with (
            open_storage(get_settings()) as storage,
            unit_of_work(storage.sessions) as session,
        ):
            return await service.add_rule(session, body, actor=_actor())

    click.echo(describe(run_async(go)))


@fees.command("list")
@click.option("--merchant", "merchant_no", default=None)
@click.option("--on", default=None, callback=_day, help="Only rules in force on this day.")
@click.option("--retired", is_flag=True, help="Include retired rules.")
def list_command(merchant_no: str | None, on: date | None, retired: bool) -> None:
    """List fee rules, by id."""

    async def go() -> list[FeeRuleOut]:
        async with open_storage(get_settings()) as storage, storage.sessions() as session:
            return await service.list_rules(
                session, merchant_no=merchant_no, on=on, include_retired=retired
            )

    rules = run_async(go)
    if not rules:
        click.echo("no fee rule")
    for rule in rules:
        click.echo(describe(rule))


@fees.command("retire")
@click.argument("rule_id", type=click.IntRange(1, 2**62))
def retire_command(rule_id: int) -> None:
    """Retire a fee rule: it applies to no day whose fees are computed afterwards."""

    async def go() -> FeeRuleOut:
        async with (
            open_storage(get_settings()) as storage,
            unit_of_work(storage.sessions) as session,
        ):
            return await service.retire_rule(session, rule_id, actor=_actor())

    click.echo(describe(run_async(go)))
