"""Bank statements in a real browser: a day settled by ``cardsvc settlement run`` pays a shop;
finance uploads the bank's camt.053 statement and sees the payout's line matched (the payout
confirmed) and the bank's fee unmatched, with its break; the same file again changes nothing; a
malformed file is refused with the line and field named."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cardsvc.clearing import service as clearing
from settlement.payouts import service as payouts
from settlement.payouts.schemas import PayeeIn
from settlement.statements import camt053, csv_layout
from settlement.statements.parsing import Direction, Format, ParsedLine, ParsedStatement
from terminals.registry import service as registry
from terminals.registry.models import MerchantCategory
from tests.settlement.web.browser import Server, log_in, sell_online, settle_with_the_command

SHOP = "900000000000021"
AMOUNT = 30000


def statement_of(reference: str) -> ParsedStatement:
    return ParsedStatement(
        Format.camt053, "BROWSER-20261202", "6222000012345678", "CNY", 100000, 69800,
        [
            ParsedLine(1, date(2026, 12, 2), None, Direction.debit, AMOUNT, reference, "BK-1", "6222000011112222", "Shop", None),
            ParsedLine(2, date(2026, 12, 2), None, Direction.debit, 200, None, "BK-2", None, None, "bank fee"),
        ],
    )  # fmt: skip


@pytest.fixture(scope="module")
def paid(server: Server) -> str:
    """A shop with bank details sells on the open day; the day is settled by the command, which
    issues its payout: the payout's reference."""

    async def trade(session: Any, resources: Any) -> date:
        await registry.create_merchant(
            session, merchant_no=SHOP, name="Shop", category=MerchantCategory.retail,
            settlement_account="6222000011112222", actor="test",
        )  # fmt: skip
        await payouts.set_payee(
            session, SHOP,
            PayeeIn(bank_name="城市银行", bank_branch="东门支行", account_no="6222000011112222",
                    account_holder="Shop"),
            actor="test",
        )  # fmt: skip
        day = await clearing.clearing_date(session, resources.settings)
        await sell_online(session, day, SHOP, AMOUNT, key="browser-statement:1")
        return day

    day: date = server.run(trade)
    settle_with_the_command(server, day)  # the run issues the day's payouts with the bank file
    return payouts.reference(day, SHOP)


def payout_status(server: Server, reference: str) -> str:
    async def read(session: Any, _resources: Any) -> str:
        found = await payouts.by_references(session, [reference])
        return found[reference].status.value

    status: str = server.run(read)
    return status


def upload(page: Any, name: str, data: bytes, mime: str) -> None:
    page.goto("/finance/statements")
    page.set_input_files(
        "#statement-file", files=[{"name": name, "mimeType": mime, "buffer": data}]
    )
    page.click("#import")


def test_import_a_statement(pages: Any, server: Server, paid: str) -> None:
    assert payout_status(server, paid) == "issued"
    page = pages()
    log_in(page, "fin_maker")
    page.goto("/finance/statements")
    assert page.locator(f"#payout-{paid}").is_visible()  # issued, not yet on a statement
    statement = statement_of(paid)
    data = camt053.write(statement)
    upload(page, "statement.xml", data, "application/xml")
    assert page.locator("#notice").inner_text() == "对账单已导入。"
    assert page.locator("#statement-id").inner_text() == "BROWSER-20261202"
    assert page.locator("#lines tbody tr").count() == 2
    assert "300.00" in page.locator("#line-1").inner_text()
    assert page.locator("#line-1 .match-state").inner_text() == "已匹配"
    assert payout_status(server, paid) == "confirmed"
    assert page.locator("#line-2 .match-state").inner_text() == "未匹配"
    shown = page.url
    page.click("#line-2 a.break-link")
    assert page.locator("#break-amount").inner_text() == "2.00"
    assert page.locator("#break-reference").inner_text() == "BK-2"
    page.goto(shown)

    upload(page, "statement.xml", data, "application/xml")  # again: nothing changes
    assert page.locator("#notice").inner_text() == "此对账单已导入过，本次未作任何更改。"
    assert page.url.split("?")[0] == shown.split("?")[0]
    page.goto("/finance/statements")
    assert page.locator("#statements tbody tr", has_text="BROWSER-20261202").count() == 1
    assert page.locator(f"#payout-{paid}").count() == 0  # confirmed

    broken = csv_layout.write(statement).replace(b"30000", b"300.00")
    upload(page, "statement.csv", broken, "text/csv")
    assert page.locator("#error-name").inner_text() == "StatementMalformed"
    assert page.locator("#error-detail").inner_text().startswith("amount at line 2, field amount")


def test_an_auditor_has_no_upload_form(pages: Any) -> None:
    page = pages()
    log_in(page, "auditor1")
    page.goto("/finance/statements")
    assert page.locator("h1").inner_text() == "银行对账单"
    assert page.locator("#upload").count() == 0
