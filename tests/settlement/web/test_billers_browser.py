"""Billers on the finance pages in a real browser: a day settled by the real ``cardsvc
settlement run`` shows each biller's batch (in yuan, its fee per payment), the payout that paid
it and the day's reconciliation with the biller, whose break is one click away."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cardsvc.bills import service as bills
from cardsvc.bills.schemas import BillerIn
from cardsvc.clearing import service as clearing
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from settlement.billrecon import service as recon
from tests.settlement.web.browser import Server, log_in, settle_with_the_command

SCRIPT = "<script>alert(2)</script>"
CODE = "GASX"


def biller_day(server: Server) -> date:
    """A biller named like a script is paid two bills on the open day; the day is settled by
    the command, then the biller's reconciliation file is built."""

    async def trade(session: Any, resources: Any) -> date:
        body = BillerIn.model_validate({
            "code": CODE, "name": SCRIPT, "category": "gas", "endpoint": "http://127.0.0.1:9/b",
            "key_label": "BILLER_GASX", "bill_key_pattern": "G[0-9]{7}",
            "bank": {"bank_name": "城市银行", "account_no": "62220000123456",
                     "account_name": "城市燃气"},
            "fee": {"fixed": 100, "bps": 0, "max": 0},
        })  # fmt: skip
        await bills.create_biller(session, body, actor="test")
        day = await clearing.clearing_date(session, resources.settings)
        resident = AccountRef(AccountKind.resident_account, "42")
        payable = AccountRef(AccountKind.biller_payable, CODE)
        for n, amount in enumerate((12_850, 8_000)):
            await ledger.post(session, PostingRequest(
                f"deposit:T:{n}", "deposit", day,
                [Entry(AccountRef(AccountKind.counter_cash, "C1"), Side.debit, amount),
                 Entry(resident, Side.credit, amount)]))  # fmt: skip
            await ledger.post(session, PostingRequest(
                f"bill:browser-{n}", "bill_payment", day,
                [Entry(resident, Side.debit, amount), Entry(payable, Side.credit, amount)]))  # fmt: skip
        return day

    day: date = server.run(trade)
    settle_with_the_command(server, day)

    async def reconcile(session: Any, _resources: Any) -> None:
        # Posted straight to the ledger, the payments have no bill payment rows: the file
        # holds no line, so it is not the ledger's and opens a break.
        await recon.build(session, "CITYCARD", day, await bills.get_biller(session, CODE))

    server.run(reconcile)
    return day


@pytest.fixture(scope="module")
def settled(server: Server) -> date:
    return biller_day(server)


def test_a_days_billers_their_payout_and_reconciliation(pages: Any, settled: date) -> None:
    day = settled
    page = pages()
    dialogs: list[str] = []

    def seen(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", seen)
    log_in(page, "auditor1")
    page.goto(f"/finance/days/{day.isoformat()}")
    row = page.locator(f"#biller-{CODE}")
    assert row.locator(".biller-name").inner_text() == SCRIPT  # text, never run
    assert row.locator(".gross").inner_text() == "208.50"  # 128.50 + 80.00, from fen
    assert row.locator(".fee").inner_text() == "2.00"  # 1.00 per payment
    assert row.locator(".net").inner_text() == "206.50"
    assert row.locator(".batch-status").inner_text() == "已入账"
    payout = row.locator(".payout").inner_text()
    assert payout.startswith(f"B{day:%Y%m%d}{CODE} 206.50 ")
    assert "与账务不符" in row.locator(".recon").inner_text()
    assert dialogs == []

    page.goto("/finance/lang/en")
    page.goto(f"/finance/days/{day.isoformat()}")
    assert "Not the ledger's" in page.locator(f"#biller-{CODE} .recon").inner_text()
    page.locator(f"#biller-{CODE} .recon a").click()
    page.wait_for_url("**/finance/breaks?**")
    assert "Biller file not the ledger's" in page.locator("main").inner_text()
    assert f"biller {CODE}: the file holds 0 line(s)" in page.locator("main").inner_text()


def test_a_billers_payout_waits_for_the_banks_statement_beside_the_merchants(
    pages: Any, settled: date
) -> None:
    page = pages()
    log_in(page, "auditor1")
    page.goto("/finance/statements")
    reference = f"B{settled:%Y%m%d}{CODE}"
    assert page.locator(f"#payout-{reference} .payee").inner_text() == f"缴费单位 {CODE}"
    assert "206.50" in page.locator(f"#payout-{reference}").inner_text()
