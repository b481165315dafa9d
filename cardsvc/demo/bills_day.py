"""Demo: utility bills paid through the simulated biller (``biller-sim``, its own process).

A development key shared with the simulated water company is loaded into the HSM, the company
is registered (or pointed at this run's simulator), and two bills are paid: one in cash at the
counter, one from a holder's online account. The outbox worker then pays them at the biller;
the demo shows each state, the biller's receipts and the biller's payable.
"""

from __future__ import annotations

from typing import Any

import click
import httpx

from cardsvc import clock
from cardsvc.bills import service as bills
from cardsvc.bills import tasks as bill_tasks
from cardsvc.bills.adapter import BillerClient
from cardsvc.bills.models import BillerCategory, SubChannel
from cardsvc.bills.schemas import BankDetails, BillerChange, BillerIn
from cardsvc.db import unit_of_work
from cardsvc.demo.online_day import COUNTER, _balance, _card
from cardsvc.hsm import HsmKeyError
from cardsvc.ledger.models import AccountKind
from cardsvc.resources import Resources
from terminals.devices.billersim.child import start_biller_process

BILLER = "WATER01"
KEY_LABEL = "BILLER_WATER01"
# Development only: the key the demo shares with its simulated biller (a real one comes from a
# key ceremony and is never in clear on the host).
DEMO_KEY = bytes(range(32))


def _data_set(channel: str) -> dict[str, Any]:
    accounts = [
        {"bill_key": f"31000{n:05d}", "holder": "张三丰",
         "bills": [{"bill_id": f"B202611-{n:05d}", "period": "202611", "amount": 8_600,
                    "late_fee": 0, "due_date": "2026-12-15"}]}
        for n in range(1, 1000)
    ]  # fmt: skip
    return {"channel": channel, "billers": [{"id": BILLER, "key": DEMO_KEY.hex(),
                                             "accounts": accounts}]}  # fmt: skip


async def _register(resources: Resources, url: str) -> None:
    try:
        await resources.hsm.key_info(KEY_LABEL)
    except HsmKeyError:
        await resources.hsm.key_import(KEY_LABEL, "biller-mac", DEMO_KEY, "HMAC-SHA256")
    async with unit_of_work(resources.sessions) as session:
        if not any(b.code == BILLER for b in await bills.list_billers(session, status=None)):
            await bills.create_biller(
                session,
                BillerIn(
                    code=BILLER, name="Demo Water Company", category=BillerCategory.water,
                    endpoint=url, key_label=KEY_LABEL, bill_key_pattern="31[0-9]{8}",
                    bank=BankDetails(bank_name="Demo Bank", account_no="6222021009000001",
                                     account_name="Demo Water Company"),
                ),
                actor="demo-admin",
            )  # fmt: skip
        else:  # a later run: this run's simulator listens on another port
            await bills.change_biller(
                session, BILLER, BillerChange(endpoint=url), actor="demo-admin"
            )


async def step_bills(resources: Resources) -> None:
    settings = resources.settings
    url, stop = start_biller_process(
        settings.var_dir / "biller-sim", _data_set(settings.bills_channel_id)
    )
    try:
        await _register(resources, url)
        click.echo(f"  biller {BILLER} registered, its key in the HSM; biller-sim at {url}")
        async with resources.sessions() as session:
            # Bill keys no earlier run paid (the simulator starts afresh every run).
            base = 1 + await bills.payment_count(session, BILLER)
        card_no, resident_id = await _card(resources, 20_000)
        async with httpx.AsyncClient() as http:
            client = BillerClient(http, resources.hsm, settings.bills_channel_id, 10.0)
            serials = []
            cash_key, online_key = f"31000{base:05d}", f"31000{base + 1:05d}"
            cash = await bills.query_bill(resources.sessions, client, BILLER, cash_key, None)
            click.echo(
                f"  bill {cash.bill_id} of {cash.holder_masked} ({cash_key}): "
                f"{cash.amount_due} fen due by {cash.due_date}"
            )
            async with unit_of_work(resources.sessions) as session:
                made = await bills.submit_payment(
                    session, settings,
                    bills.Payer(SubChannel.counter, counter_code=COUNTER, operator="demo-operator"),
                    biller_code=BILLER, reference=cash.reference, amount=None,
                    key=f"DEMO-BILL-{resident_id}",
                )  # fmt: skip
                serials.append(str(made.payment.serial))
            online = await bills.query_bill(resources.sessions, client, BILLER, online_key, None)
            async with unit_of_work(resources.sessions) as session:
                made = await bills.pay_from_account(
                    session, settings, resident_id, biller_code=BILLER,
                    reference=online.reference, amount=None, key=f"demo-{resident_id}",
                )  # fmt: skip
                serials.append(str(made.payment.serial))
            click.echo(
                f"  paid in cash at counter {COUNTER} ({serials[0]}) and from the online account "
                f"of card {card_no[-4:]} ({serials[1]}): both pending, the money held"
            )
            counts = await bill_tasks.run_outbox(resources.sessions, settings, client, clock.now())
        async with resources.sessions() as session:
            for serial in serials:
                payment = await bills.payment_by_serial(session, serial)
                if payment.status.visible != "paid":
                    raise click.ClickException(f"bill payment {serial} is {payment.status.value}")
                click.echo(
                    f"  {serial}: {payment.status.visible}, biller's receipt {payment.receipt_no}"
                )
        payable = await _balance(resources, AccountKind.biller_payable, BILLER)
        click.echo(
            f"  the worker sent {sum(counts.values())} payments; the water company's payable "
            f"holds {payable} fen for the nightly settlement"
        )
    finally:
        stop()
