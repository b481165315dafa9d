"""The days pages' reading of the nightly settlement: clearing days with their run and totals,
the last 30 days' volume per transaction class and its chart, one day per merchant and class,
and the pages themselves over HTTP (signed in, amounts in yuan, names escaped)."""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta

import httpx
from sqlalchemy import select

from cardsvc import clock
from cardsvc.audit.models import AuditEntry
from cardsvc.clearing import service as clearing
from cardsvc.clearing.models import DayStatus
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.resources import Resources
from settlement.days import service as days
from settlement.nightly import repository as nightly_rows
from settlement.nightly import service as nightly
from settlement.nightly.models import STEPS, BatchStatus, RunStatus
from settlement.web import chart
from settlement.web.formatting import yuan
from terminals.registry import service as registry
from terminals.registry.models import MerchantCategory
from tests.settlement.helpers import ride_day
from tests.settlement.web.http import sign_in
from tests.terminals.helpers import BUS_MERCHANT, World

SHOP = "900000000000001"
SCRIPT = "<script>alert(1)</script>"


async def shop_trade(resources: Resources, purchase: int, refund: int) -> date:
    """A shop named like a script: one online purchase and one online refund on the open day."""
    async with unit_of_work(resources.sessions) as session:
        await registry.create_merchant(
            session, merchant_no=SHOP, name=SCRIPT, category=MerchantCategory.retail,
            settlement_account="6222000055556666", actor="test",
        )  # fmt: skip
        day = await clearing.clearing_date(session, resources.settings)
        bank = AccountRef(AccountKind.bank, "test")
        pending = AccountRef(AccountKind.merchant_pending, SHOP)
        for key, tx_type, amount, debit, credit in (
            ("test:purchase", "online_purchase", purchase, bank, pending),
            ("test:refund", "online_refund", refund, pending, bank),
        ):
            await ledger.post(
                session,
                PostingRequest(
                    idempotency_key=key,
                    tx_type=tx_type,
                    clearing_date=day,
                    entries=[Entry(debit, Side.debit, amount), Entry(credit, Side.credit, amount)],
                ),
            )
    return day


def test_nice_steps() -> None:
    assert [chart.nice_step(s) for s in (1, 5, 6, 100, 101, 999, 1000, 123_456)] == [
        1, 1, 2, 20, 50, 200, 200, 50_000,
    ]  # fmt: skip


def test_the_chart_stacks_up_and_refunds_down() -> None:
    first = date(2026, 3, 1)
    points = [
        days.VolumePoint(first, "offline", 3, 600),
        days.VolumePoint(first, "online_purchase", 1, 400),
        days.VolumePoint(first, "online_refund", 1, -100),
        days.VolumePoint(first + timedelta(days=29), "offline", 1, 200),
    ]
    drawn = chart.build(
        days.Volume(
            first,
            first + timedelta(days=29),
            ["offline", "online_purchase", "online_refund"],
            points,
        )
    )
    offline, purchase, refund, later = drawn.bars
    assert offline.y + offline.height == drawn.zero  # from zero up
    assert purchase.y + purchase.height == offline.y  # stacked on the first
    assert refund.y == drawn.zero  # from zero down
    assert refund.height < offline.height
    assert later.x > offline.x
    assert {b.color for b in (offline, purchase, refund)} == {c for _n, c in drawn.legend}
    assert drawn.ticks[0].fen <= -100
    assert drawn.ticks[-1].fen >= 1000
    assert [d.text for d in drawn.days] == [
        "03-01",
        "03-06",
        "03-11",
        "03-16",
        "03-21",
        "03-26",
        "03-30",
    ]


async def test_days_after_a_settled_day(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    day = await ride_day(client, world, resources)
    assert await shop_trade(resources, 5000, 1200) == day
    result = await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    assert result.status is RunStatus.settled

    async with resources.sessions() as session:
        listed = await days.list_days(session)
        volume = await days.volume(session)
        detail = await days.day_detail(session, day)
    rows = {r.clearing_date: r for r in listed.rows}
    settled = rows[day]
    assert settled.day_status is DayStatus.closed
    assert settled.run_status is RunStatus.settled
    assert settled.merchants == 3
    assert rows[day + timedelta(days=1)].run_status is None  # the next day, open, never run
    assert listed.rows[0].clearing_date == day + timedelta(days=1)  # newest first

    assert volume is not None
    assert volume.last == day + timedelta(days=1)
    assert volume.classes == ["offline", "online_purchase", "online_refund"]
    by_class = {p.tx_class: p for p in volume.points}
    assert by_class["online_refund"].gross == -1200
    assert settled.gross == sum(p.gross for p in volume.points)
    assert settled.count == sum(p.count for p in volume.points)

    assert [s.step for s in detail.steps] == list(STEPS)
    assert all(s.done for s in detail.steps)
    assert detail.steps_done == len(STEPS)
    assert not detail.running
    shop = next(m for m in detail.merchants if m.merchant_no == SHOP)
    assert shop.name == SCRIPT
    assert (shop.gross, shop.net, shop.status) == (3800, 3800, BatchStatus.posted)
    assert [(line.tx_class, line.gross) for line in shop.lines] == [
        ("online_purchase", 5000),
        ("online_refund", -1200),
    ]
    assert [m.merchant_no for m in detail.merchants] == sorted(
        m.merchant_no for m in detail.merchants
    )
    assert detail.merchant_total == 3
    assert sum(c.gross for c in detail.classes) == settled.gross
    bus = next(m for m in detail.merchants if m.merchant_no == BUS_MERCHANT)
    assert bus.lines[0].tx_class == "offline"


async def test_the_pages_over_http(client: httpx.AsyncClient, resources: Resources) -> None:
    day = await shop_trade(resources, 123456, 7)
    await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    assert (await client.get("/finance/days")).status_code == 303  # not signed in
    await sign_in(client, resources, "fin_days")

    listing = await client.get("/finance/days")
    assert listing.status_code == 200
    assert "default-src 'none'" in listing.headers["content-security-policy"]
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="chart"' in listing.text
    assert 'role="img" aria-labelledby="chart-title chart-desc"' in listing.text
    assert yuan(123449) == "1,234.49"
    assert "1,234.49" in listing.text  # the day's gross, in yuan
    assert "<script" not in listing.text

    shown = await client.get(f"/finance/days/{day.isoformat()}")
    assert shown.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text
    assert "<script" not in shown.text
    assert shown.text.count('class="step-state">') == len(STEPS)
    assert 'http-equiv="refresh"' not in shown.text  # settled: nothing to follow

    client.cookies.set("cardsvc_lang", "en")
    english = await client.get(f"/finance/days/{day.isoformat()}")
    assert english.status_code == 200
    assert "Settlement steps" in english.text
    assert (await client.get("/finance/days")).status_code == 200
    client.cookies.set("cardsvc_lang", "zh")

    missing = await client.get("/finance/days/2001-01-01")
    assert missing.status_code == 404
    assert "NotFound" in missing.text
    assert (await client.get("/finance/days/2026-13-01")).status_code == 422
    assert (await client.get("/finance/days?page=0")).status_code == 422


async def test_a_running_day_shows_its_progress(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    day = await shop_trade(resources, 500, 100)
    # A run that stopped after its first step: what a crash, or a run still going, leaves.
    async with unit_of_work(resources.sessions) as session:
        await nightly_rows.insert_run(session, day, clock.now())
        await nightly_rows.record_step(
            session, day, STEPS[0], rows=1, amount=0, detail="closed", seconds=0.1,
            now=clock.now(),
        )  # fmt: skip
    async with resources.sessions() as session:
        detail = await days.day_detail(session, day)
    assert detail.running
    assert detail.steps_done == 1
    await sign_in(client, resources, "fin_progress")
    shown = await client.get(f"/finance/days/{day.isoformat()}")
    assert 'http-equiv="refresh" content="10"' in shown.text
    assert '<progress id="progress" max="8" value="1">' in shown.text


async def test_the_files_page_and_audited_downloads(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    day = await shop_trade(resources, 4200, 200)
    await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    await sign_in(client, resources, "fin_files")
    shown = await client.get(f"/finance/days/{day.isoformat()}/files")
    assert shown.status_code == 200
    assert 'id="manifest-status" class="ok"' in shown.text
    assert 'id="verified" class="ok"' in shown.text
    assert 'class="file-altered"' not in shown.text
    directory = resources.settings.settlement_root / day.isoformat()
    listed = json.loads((directory / "manifest.json").read_bytes())["files"]
    for entry in listed:
        assert f'<code class="file-sha256">{entry["sha256"]}</code>' in shown.text

    summary = next(e for e in listed if e["name"] == "summary.csv")
    answer = await client.get(f"/finance/days/{day.isoformat()}/files/summary.csv")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'attachment; filename="summary.csv"' in answer.headers["content-disposition"]
    assert hashlib.sha256(answer.content).hexdigest() == summary["sha256"]
    async with resources.sessions() as session:
        entries = (
            (
                await session.execute(
                    select(AuditEntry).where(AuditEntry.action == "settlement.file_download")
                )
            )
            .scalars()
            .all()
        )
    assert [(e.actor, e.entity_id) for e in entries] == [
        ("fin_files", f"{day.isoformat()}/summary.csv")
    ]
    assert (
        await client.get(f"/finance/days/{day.isoformat()}/files/manifest.json")
    ).status_code == 200

    for bad in ("..%2F..%2Fetc%2Fpasswd", ".summary.csv.part", "nothing.csv", "%2Fetc%2Fpasswd"):
        assert (await client.get(f"/finance/days/{day.isoformat()}/files/{bad}")).status_code == 404

    # A file changed on disk: the page says which, and what it should be.
    (directory / "summary.csv").write_bytes(b"changed\r\n")
    shown = await client.get(f"/finance/days/{day.isoformat()}/files")
    assert 'id="verified" class="error"' in shown.text
    assert 'id="file-summary.csv" class="file-altered"' in shown.text
    assert summary["sha256"] in shown.text
    assert (await client.get("/finance/days/2001-01-01/files")).status_code == 404
    client.cookies.set("cardsvc_lang", "en")
    assert "Altered" in (await client.get(f"/finance/days/{day.isoformat()}/files")).text
