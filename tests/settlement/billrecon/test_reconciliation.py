"""The daily reconciliation with each biller through the real biller-sim process: a file per
biller and day as docs/biller-protocol.md §8 has it, equal to the day's movement of the biller's
payable; the biller agrees, or each disagreement (missing, extra, amount differs) becomes a
break; no answer is tried again with backoff; a file that is not the ledger's is never sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from cardsvc import clock
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakItem, BreakKind, BreakStatus
from cardsvc.clearing import service as clearing
from cardsvc.cli import main
from cardsvc.errors import NotFound
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from settlement.billrecon import files, service
from settlement.billrecon.models import ReconStatus
from tests.billersim import SimControl
from tests.cardsvc.bills.paying import Bills, biller_client, register_billers
from tests.factories import make_card, staff_headers

KEYS = ("3100000011", "3100000012", "3100000013")


@pytest.fixture
async def bills(resources: Resources, paying_sim: SimControl) -> AsyncIterator[Bills]:
    # The payment tests' simulator: it takes the timestamps of a host clock moved on, as the
    # outbox worker's backoffs and these tests move it.
    await register_billers(resources, paying_sim.url)
    async with biller_client(resources) as client:
        yield Bills(resources, client, paying_sim)


async def paid_day(bills: Bills, resources: Resources) -> tuple[date, list[str]]:
    """Three water bills paid from one resident's account, then the day cut. Returns the
    closed day and the serials."""
    card = await make_card(resources, 1, account=100_000, pin=None)
    serials = []
    for n, bill_key in enumerate(KEYS):
        found = await bills.query(bill_key)
        made = await bills.pay_online(card.resident_id, found, f"k-{n}")
        serials.append(str(made.payment.serial))
    await bills.settle()
    async with resources.sessions() as session:
        day = await clearing.clearing_date(session, resources.settings)
    await clearing.close_through(resources.sessions, resources.settings, day)
    return day, serials


async def reconcile(bills: Bills, day: date, code: str | None = None) -> dict[str, service.Sent]:
    found = await service.reconcile(bills.resources.sessions, bills.client, "CITYCARD", day, code)
    return {s.biller_code: s for s in found}


async def breaks_of(resources: Resources, day: date) -> list[BreakItem]:
    async with resources.sessions() as session:
        stmt = select(BreakItem).where(
            BreakItem.clearing_date == day, BreakItem.kind == BreakKind.biller_disagreement
        )
        return list((await session.execute(stmt.order_by(BreakItem.id))).scalars())


async def test_the_biller_agrees_with_the_days_file(
    bills: Bills, resources: Resources, client: httpx.AsyncClient
) -> None:
    day, serials = await paid_day(bills, resources)
    sent = await reconcile(bills, day)
    assert {c: s.status for c, s in sent.items()} == {
        "GAS01": ReconStatus.agreed,  # a file with no line, sent all the same
        "WATER01": ReconStatus.agreed,
    }
    async with resources.sessions() as session:
        water = await service.one(session, day, "WATER01")
        gas = await service.one(session, day, "GAS01")
        moved = await ledger.balance(session, AccountRef(AccountKind.biller_payable, "WATER01"))
    assert gas.file_text == "0|0\n"
    assert water.file_name == f"CITYCARD_WATER01_{day:%Y%m%d}.txt"
    parsed = files.parse(water.file_text.encode())
    assert [ln.serial for ln in parsed.lines] == sorted(serials)
    assert {(ln.day, ln.type, ln.sub_channel, ln.amount) for ln in parsed.lines} == {
        (day, "payment", "online", 12_850)
    }
    assert all(ln.receipt_no for ln in parsed.lines)
    assert water.file_text.splitlines()[0] == f"3|{3 * 12_850}"
    assert (water.count, water.total) == (water.ledger_count, water.ledger_total) == (3, moved)
    assert bills.sim.state()["billers"]["WATER01"]["payments"].keys() == set(serials)
    assert await breaks_of(resources, day) == []

    # Finance sees each biller's state, its answer and the file.
    finance = await staff_headers(client, "fin1", Role.finance)
    listed = await client.get(
        "/api/v1/settlement/bill-reconciliations", params={"date": day.isoformat()},
        headers=finance,
    )  # fmt: skip
    assert listed.status_code == 200
    assert [(r["biller_code"], r["status"], r["count"], r["sum"]) for r in listed.json()] == [
        ("GAS01", "agreed", 0, 0), ("WATER01", "agreed", 3, 3 * 12_850)
    ]  # fmt: skip
    one = await client.get(
        f"/api/v1/settlement/bill-reconciliations/{day}/WATER01", headers=finance
    )
    assert one.json()["answer"] == {"result": "agree", "date": day.isoformat()}
    text = await client.get(
        f"/api/v1/settlement/bill-reconciliations/{day}/WATER01/file", headers=finance
    )
    assert text.text == water.file_text
    nobody = await client.get(f"/api/v1/settlement/bill-reconciliations/{day}/NOSUCH")
    assert nobody.status_code == 401
    missing = await client.get(
        f"/api/v1/settlement/bill-reconciliations/{day}/NOSUCH", headers=finance
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("mode", "kind", "amount"),
    [
        ("recon_missing", "only_channel", 12_850),
        ("recon_extra", "only_biller", 100),
        ("recon_amount", "amount_differs", 100),
    ],
)
async def test_each_disagreement_is_a_break_and_a_later_agreement_closes_it(
    bills: Bills, resources: Resources, mode: str, kind: str, amount: int
) -> None:
    day, serials = await paid_day(bills, resources)
    bills.sim.behave("WATER01", mode, times=1)
    sent = await reconcile(bills, day, "WATER01")
    assert sent["WATER01"].status is ReconStatus.disagreed
    (item,) = await breaks_of(resources, day)
    serial = "SIMEXTRA1" if kind == "only_biller" else min(serials)
    assert (item.reference, item.amount, item.status) == (serial, amount, BreakStatus.open)
    assert item.reason.startswith(f"{kind}: biller WATER01, bill ")
    if kind != "only_biller":
        assert KEYS[0] in item.reason  # the bill of the first line
        assert item.source == "bill_payment"
        assert item.source_id is not None
    # Sending the same day again opens nothing twice ...
    bills.sim.behave("WATER01", mode, times=1)
    await reconcile(bills, day, "WATER01")
    assert len(await breaks_of(resources, day)) == 1
    # ... and once the biller agrees, its break is closed by the reconciliation.
    again = await reconcile(bills, day, "WATER01")
    assert again["WATER01"].status is ReconStatus.agreed
    (closed,) = await breaks_of(resources, day)
    assert (closed.status, closed.resolution) == (BreakStatus.resolved, "biller_agrees")
    async with resources.sessions() as session:
        row = await service.one(session, day, "WATER01")
    assert (row.attempts, row.disagreements) == (3, 0)


async def test_no_answer_is_tried_again_with_backoff_by_the_job(
    bills: Bills, resources: Resources
) -> None:
    day, _serials = await paid_day(bills, resources)
    bills.sim.behave("WATER01", "down")
    counts = await service.run_due(resources.sessions, bills.client, "CITYCARD", clock.now())
    assert counts == {"agreed": 1, "retrying": 1}  # GAS01 answers, WATER01 is down
    async with resources.sessions() as session:
        row = await service.one(session, day, "WATER01")
    assert (row.status, row.attempts, row.last_error) == (
        ReconStatus.sending, 1, "no answer: status 503"
    )  # fmt: skip
    assert row.next_attempt_at is not None
    assert row.next_attempt_at - clock.now() == service.backoff(1)
    # Before its time nothing is sent; after it, the file goes again and is answered.
    bills.sim.behave("WATER01", "normal")
    assert await service.run_due(resources.sessions, bills.client, "CITYCARD", clock.now()) == {}
    clock.advance(service.backoff(1))
    counts = await service.run_due(resources.sessions, bills.client, "CITYCARD", clock.now())
    async with resources.sessions() as session:
        row = await service.one(session, day, "WATER01")
    assert counts == {"agreed": 1}, row.last_error
    assert service.backoff(2) == 2 * service.backoff(1)
    assert service.backoff(30).total_seconds() == service.MAX_BACKOFF_SECONDS


async def test_a_file_that_is_not_the_ledgers_is_a_break_and_never_sent(
    bills: Bills, resources: Resources
) -> None:
    day, _serials = await paid_day(bills, resources)
    # A movement of the payable that no payment explains (written straight into the ledger on
    # the day, as a faulty path would).
    async with resources.sessions() as session:
        await ledger.post(session, PostingRequest(
            "stray:1", "bill_payment", day,
            [Entry(AccountRef(AccountKind.bank, "DEMO"), Side.debit, 500),
             Entry(AccountRef(AccountKind.biller_payable, "WATER01"), Side.credit, 500)]))  # fmt: skip
        await session.commit()
    before = bills.sim.state()
    sent = await reconcile(bills, day, "WATER01")
    assert sent["WATER01"].status is ReconStatus.unbalanced
    assert bills.sim.state() == before  # nothing reached the biller
    async with resources.sessions() as session:
        found = await breaks.list_breaks(session, kind=BreakKind.biller_file_unbalanced)
    assert [(b.amount, b.status) for b in found] == [(500, BreakStatus.open)]
    assert "payable moved 4 time(s)" in found[0].reason


@pytest.mark.usefixtures("cli_env")
async def test_an_open_day_is_refused_and_the_command_reports(
    bills: Bills, resources: Resources
) -> None:
    async with resources.sessions() as session:
        day = await clearing.clearing_date(session, resources.settings)
        await session.commit()
    with pytest.raises(NotFound):
        await reconcile(bills, day)
    await clearing.close_through(resources.sessions, resources.settings, day)
    await reconcile(bills, day)
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["bill-recon", "status", "--date", day.isoformat()]
    )
    assert result.exit_code == 0, result.output
    assert f"{day.isoformat()} WATER01 agreed: 0 line(s), 0 fen" in result.output
