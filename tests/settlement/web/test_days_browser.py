"""The days pages in a real browser: a day settled by the real ``cardsvc settlement run`` is
listed with its totals in yuan, the chart renders (and prints), a merchant named like a script
renders as text, and a file downloaded from the day's files page has the SHA-256 and size its
manifest lists."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cardsvc.clearing import service as clearing
from terminals.registry import service as registry
from terminals.registry.models import MerchantCategory
from tests.settlement.web.browser import Server, log_in, sell_online, settle_with_the_command

SCRIPT = "<script>alert(1)</script>"
SHOP = "900000000000002"


def settled_day(server: Server) -> date:
    """A shop named like a script sells online on the open day; the day is then settled by the
    command an operator runs."""

    async def trade(session: Any, resources: Any) -> date:
        await registry.create_merchant(
            session, merchant_no=SHOP, name=SCRIPT, category=MerchantCategory.retail,
            settlement_account="6222000077778888", actor="test",
        )  # fmt: skip
        day = await clearing.clearing_date(session, resources.settings)
        for n, amount in enumerate((12345, 6789)):
            await sell_online(session, day, SHOP, amount, key=f"browser:{n}")
        return day

    day: date = server.run(trade)
    settle_with_the_command(server, day)
    return day


@pytest.fixture(scope="module")
def settled(server: Server) -> date:
    return settled_day(server)


def test_a_settled_day_its_chart_and_a_script_named_merchant(pages: Any, settled: date) -> None:
    day = settled
    page = pages()
    dialogs: list[str] = []

    def seen(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", seen)
    log_in(page, "auditor1")
    page.goto("/finance/days")
    row = page.locator(f"#day-{day.isoformat()}")
    assert row.locator(".run-status").inner_text() == "已结算"
    assert row.locator(".gross").inner_text() == "191.34"  # 123.45 + 67.89, from fen

    chart = page.get_by_role("img", name="近30日各交易类型交易额", exact=False)
    assert chart.count() == 1
    box = chart.bounding_box()
    assert box is not None
    assert box["width"] > 300
    assert box["height"] > 100
    bar = page.locator(f'#volume-chart rect[data-date="{day.isoformat()}"]')
    assert bar.count() == 1
    bar_box = bar.bounding_box()
    assert bar_box is not None
    assert bar_box["height"] > 10
    assert "联机消费" in page.locator("#legend").inner_text()

    page.emulate_media(media="print")  # on paper: the chart stays, the navigation goes
    assert chart.is_visible()
    assert not page.locator("header.top").is_visible()
    page.emulate_media(media="screen")

    page.click(f'a[href="/finance/days/{day.isoformat()}"]')
    assert page.locator("#run-status").inner_text() == "已结算"
    assert page.locator("#step-report .step-state").inner_text() == "完成"
    shop = page.locator(f"#merchant-{SHOP}")
    assert shop.locator(".merchant-name").inner_text() == SCRIPT  # as text
    assert "191.34" in shop.inner_text()
    assert dialogs == []  # the script never ran
    assert page.evaluate("document.querySelectorAll('main script').length") == 0


def test_download_a_file_and_check_it_against_the_manifest(pages: Any, settled: date) -> None:
    day = settled
    page = pages()
    log_in(page, "fin_checker")
    page.goto(f"/finance/days/{day.isoformat()}")
    page.click("#files-link")
    assert page.locator("#manifest-status").inner_text() == "MAC 验证通过"
    assert page.locator("#verified").inner_text().startswith("全部文件与清单一致")
    with page.expect_download() as caught:
        page.click("#download-manifest")
    manifest = json.loads(Path(caught.value.path()).read_bytes())
    listed = {f["name"]: f for f in manifest["files"]}
    assert "summary.csv" in listed
    with page.expect_download() as caught:
        page.locator('tr[id="file-summary.csv"] a.download').click()
    assert caught.value.suggested_filename == "summary.csv"
    data = Path(caught.value.path()).read_bytes()
    assert hashlib.sha256(data).hexdigest() == listed["summary.csv"]["sha256"]
    assert len(data) == listed["summary.csv"]["size"]
    shown = page.locator('tr[id="file-summary.csv"] .file-sha256').inner_text()
    assert shown == listed["summary.csv"]["sha256"]


def test_a_merchant_statement_prints_and_exports(pages: Any, settled: date) -> None:
    page = pages()
    log_in(page, "auditor1")
    page.goto("/finance/merchants")
    page.fill("#q", SHOP)
    page.click("#search")
    assert page.locator(f"#merchant-{SHOP} .merchant-name").inner_text() == SCRIPT
    page.click(f'a[href="/finance/merchants/{SHOP}/statement"]')
    assert page.locator("#merchant-name").inner_text() == SCRIPT
    assert page.locator("#total-gross").inner_text() == "191.34"
    assert page.locator(f"#day-{settled.isoformat()}").is_visible()
    with page.expect_download() as caught:
        page.click("#export")
    lines = Path(caught.value.path()).read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith("merchant_no,merchant_name,clearing_date,class")
    assert (
        lines[1]
        == f"{SHOP},{SCRIPT},{settled.isoformat()},online_purchase,2,191.34,0.00,191.34,posted"
    )
    page.emulate_media(media="print")  # on paper: the statement, without the form and navigation
    assert page.locator("#statement").is_visible()
    assert not page.locator("#export").is_visible()
    assert not page.locator("header.top").is_visible()
