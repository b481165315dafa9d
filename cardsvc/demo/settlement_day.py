"""Demo step: the nightly settlement of the demo's day (``cardsvc demo``).

Gives the merchants what finance would (a fee rule for every merchant and bank details for
each, as ``cardsvc fees add`` and ``cardsvc payouts set-payee`` do), settles the clearing day the
demo's rides and purchases landed on (the run closes it: a manual day cut, so the next demo run
trades on the next day), prints each step, where the files are and what they hold, then checks
the files against their manifest and its HSM MAC as ``cardsvc settlement verify`` does.
"""

from __future__ import annotations

from datetime import date

import click

from cardsvc.clearing import service as clearing
from cardsvc.db import unit_of_work
from cardsvc.resources import Resources
from settlement.fees import service as fees
from settlement.fees.schemas import FeeRuleCreate
from settlement.nightly import service as nightly
from settlement.nightly.files import yuan
from settlement.nightly.models import STEPS, Step
from settlement.payouts import service as payouts
from settlement.payouts.schemas import PayeeIn

ACTOR = "demo"


async def _finance_setup(resources: Resources, day: date) -> None:
    """A fee of 0.6‰ per record (rate in 1/100000), at least 1 fen, for every merchant, and
    bank details for each merchant without them; a rerun adds nothing."""
    async with unit_of_work(resources.sessions) as session:
        if not await fees.list_rules(session, on=day):
            rule = FeeRuleCreate(
                effective_from=day, rate=60, min_fee=1, note="demo: 0.6 per mille, at least 1 fen"
            )
            await fees.add_rule(session, rule, actor=ACTOR)
        for payee in await payouts.list_payees(session):
            if payee.account_no is None:
                bank = PayeeIn(
                    bank_name="Demo Bank",
                    bank_branch="Demo Branch",
                    account_no=f"6222{payee.merchant_no}",
                    account_holder=payee.merchant_name,
                )
                await payouts.set_payee(session, payee.merchant_no, bank, actor=ACTOR)


def _print_step(done: nightly.StepDone) -> None:
    how = "done earlier" if done.resumed else f"{done.seconds:.2f} s"
    click.echo(
        f"  {STEPS.index(done.step) + 1}/{len(STEPS)} {done.step.value:<9} {done.detail} ({how})"
    )


async def step_settlement(resources: Resources) -> None:
    async with resources.sessions() as session:
        day = await clearing.clearing_date(session, resources.settings)
        await session.rollback()
    await _finance_setup(resources, day)
    result = await nightly.run(
        resources.sessions, resources.settings, day, _print_step, hsm=resources.hsm
    )
    checked = await nightly.verify_files(resources.settings, resources.hsm, day)
    click.echo(f"  {day.isoformat()} {result.status.value}; files in {checked.directory}:")
    for found in checked.files:
        click.echo(f"    {found.name} ({found.size} bytes): {found.status.value}")
    if not checked.ok:
        raise click.ClickException(
            "settlement files do not verify: " + "; ".join(checked.problems())
        )
    amounts = {done.step: done.amount for done in result.steps}
    gross, fee = amounts.get(Step.report, 0), amounts.get(Step.fees, 0)
    click.echo(
        f"  totals: cleared {yuan(gross)} yuan, fees {yuan(fee)} yuan, "
        f"net {yuan(gross - fee)} yuan to the merchants"
    )
    click.echo(f"  manifest.json: {checked.detail}; every file as listed")
