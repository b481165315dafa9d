"""Merchant statements: one merchant's settlements over a period (per day and class, with the
period's totals), its CSV export (escaped against formulas, audited), and the bounds of the
period."""

from __future__ import annotations

from datetime import date, timedelta

import httpx
from sqlalchemy import select

from cardsvc.audit.models import AuditEntry
from cardsvc.clearing import service as clearing
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.resources import Resources
from settlement.nightly import service as nightly
from terminals.registry import service as registry
from terminals.registry.models import MerchantCategory
from tests.settlement.web.http import sign_in

SHOP = "900000000000003"
NAME = "=HYPERLINK(1) 商店"


async def trade_and_settle(resources: Resources, n: int, amount: int) -> date:
    async with unit_of_work(resources.sessions) as session:
        day = await clearing.clearing_date(session, resources.settings)
        shop = AccountRef(AccountKind.merchant_pending, SHOP)
        bank = AccountRef(AccountKind.bank, "test")
        await ledger.post(
            session,
            PostingRequest(
                idempotency_key=f"statement-test:{n}",
                tx_type="online_purchase",
                clearing_date=day,
                entries=[Entry(bank, Side.debit, amount), Entry(shop, Side.credit, amount)],
            ),
        )
    await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    return day


async def test_a_merchant_statement_and_its_export(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    async with unit_of_work(resources.sessions) as session:
        await registry.create_merchant(
            session, merchant_no=SHOP, name=NAME, category=MerchantCategory.retail,
            settlement_account="6222000055550000", actor="test",
        )  # fmt: skip
    first = await trade_and_settle(resources, 1, 10050)
    second = await trade_and_settle(resources, 2, 99)
    assert second == first + timedelta(days=1)
    await sign_in(client, resources, "fin_merchant")

    found = await client.get("/finance/merchants", params={"q": "商店"})
    assert f'<tr id="merchant-{SHOP}">' in found.text
    none = await client.get("/finance/merchants", params={"q": "%"})
    assert f'<tr id="merchant-{SHOP}">' not in none.text  # a wildcard is a plain character

    url = f"/finance/merchants/{SHOP}/statement"
    period = {"date_from": first.isoformat(), "date_to": second.isoformat()}
    shown = await client.get(url, params=period)
    assert shown.status_code == 200
    assert '<dd class="num" id="total-gross">101.49</dd>' in shown.text
    assert '<dd id="settled-days">2</dd>' in shown.text
    assert shown.text.count('<tr class="batch"') == 2
    only_first = await client.get(url, params={**period, "date_to": first.isoformat()})
    assert '<dd class="num" id="total-gross">100.50</dd>' in only_first.text
    default = await client.get(url)  # the 30 days up to today
    assert default.status_code == 200

    export = await client.get(url + ".csv", params=period)
    assert export.status_code == 200
    assert export.headers["content-type"] == "text/csv; charset=utf-8"
    text = export.content.decode("utf-8")
    assert text.startswith("\ufeffmerchant_no,merchant_name,clearing_date,class,")
    lines = text.split("\r\n")
    assert (
        lines[1]
        == f"{SHOP},'{NAME},{first.isoformat()},online_purchase,1,100.50,0.00,100.50,posted"
    )
    assert (
        lines[2] == f"{SHOP},'{NAME},{second.isoformat()},online_purchase,1,0.99,0.00,0.99,posted"
    )
    assert lines[3] == ""
    async with resources.sessions() as session:
        actions = (
            (
                await session.execute(
                    select(AuditEntry.entity_id).where(
                        AuditEntry.action == "merchant_statement.export"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert actions == [SHOP]

    too_long = {"date_from": "2025-01-01", "date_to": "2026-12-31"}
    assert (await client.get(url, params=too_long)).status_code == 422
    backwards = {"date_from": second.isoformat(), "date_to": first.isoformat()}
    assert (await client.get(url, params=backwards)).status_code == 422
    assert (await client.get(url, params={"date_from": "2026-02-30"})).status_code == 422
    assert (await client.get("/finance/merchants/900000000000999/statement")).status_code == 404
    assert (await client.get("/finance/merchants/12345/statement")).status_code == 422
    assert (await client.get("/finance/merchants/900000000000999/statement.csv")).status_code == 404
