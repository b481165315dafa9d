"""Bank statements in a real browser: finance uploads the bank's camt.053 statement and sees
its lines and their match state; the same file again changes nothing; a malformed file is
refused with the line and field named."""

from __future__ import annotations

from datetime import date
from typing import Any

from settlement.statements import camt053, csv_layout
from settlement.statements.parsing import Direction, Format, ParsedLine, ParsedStatement
from tests.finance.browser import Server, log_in

STATEMENT = ParsedStatement(
    Format.camt053, "BROWSER-20261202", "6222000012345678", "CNY", 100000, 69800,
    [
        ParsedLine(1, date(2026, 12, 2), None, Direction.debit, 30000, "PO-B1", "BK-1", "6222000011112222", "City Bus Co.", None),
        ParsedLine(2, date(2026, 12, 2), None, Direction.debit, 200, None, "BK-2", None, None, "bank fee"),
    ],
)  # fmt: skip


def upload(page: Any, name: str, data: bytes, mime: str) -> None:
    page.goto("/finance/statements")
    page.set_input_files(
        "#statement-file", files=[{"name": name, "mimeType": mime, "buffer": data}]
    )
    page.click("#import")


def test_import_a_statement(pages: Any, server: Server) -> None:
    page = pages()
    log_in(page, "fin_maker")
    data = camt053.write(STATEMENT)
    upload(page, "statement.xml", data, "application/xml")
    assert page.locator("#notice").inner_text() == "对账单已导入。"
    assert page.locator("#statement-id").inner_text() == "BROWSER-20261202"
    assert page.locator("#lines tbody tr").count() == 2
    assert "300.00" in page.locator("#line-1").inner_text()
    assert page.locator("#line-1 .match-state").inner_text() in (
        "待匹配",
        "已匹配",
        "未匹配",
        "不符",
    )
    shown = page.url

    upload(page, "statement.xml", data, "application/xml")  # again: nothing changes
    assert page.locator("#notice").inner_text() == "此对账单已导入过，本次未作任何更改。"
    assert page.url.split("?")[0] == shown.split("?")[0]
    page.goto("/finance/statements")
    assert page.locator("#statements tbody tr", has_text="BROWSER-20261202").count() == 1

    broken = csv_layout.write(STATEMENT).replace(b"30000", b"300.00")
    upload(page, "statement.csv", broken, "text/csv")
    assert page.locator("#error-name").inner_text() == "StatementMalformed"
    assert page.locator("#error-detail").inner_text().startswith("amount at line 2, field amount")


def test_an_auditor_has_no_upload_form(pages: Any) -> None:
    page = pages()
    log_in(page, "auditor1")
    page.goto("/finance/statements")
    assert page.locator("h1").inner_text() == "银行对账单"
    assert page.locator("#upload").count() == 0
