"""Finance asks for an answered reconciliation file to be sent again (docs/bills.md §11): the
job sends it on its next pass, the biller's fresh answer closes the disagreement it no longer
lists; the job never resends an answered file by itself. Through the real biller-sim process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from cardsvc import clock
from cardsvc.audit.models import AuditEntry
from cardsvc.breaks.models import BreakItem, BreakKind, BreakStatus
from cardsvc.clearing import service as clearing
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from settlement.billrecon import service
from settlement.billrecon.models import ReconStatus
from tests.billersim import SimControl
from tests.cardsvc.bills.paying import Bills, biller_client, register_billers
from tests.factories import make_card, staff_headers


@pytest.fixture
async def bills(resources: Resources, paying_sim: SimControl) -> AsyncIterator[Bills]:
    await register_billers(resources, paying_sim.url)
    async with biller_client(resources) as client:
        yield Bills(resources, client, paying_sim)


async def run_job(bills: Bills) -> dict[str, int]:
    clock.set_time(clock.now())  # the job's moment: what it built at that moment is due
    counts = await service.run_due(bills.resources.sessions, bills.client, "CITYCARD", clock.now())
    return dict(counts)


async def test_finance_has_a_disagreed_file_sent_again_and_the_agreement_closes_its_break(
    bills: Bills, resources: Resources, client: httpx.AsyncClient
) -> None:
    card = await make_card(resources, 1, account=100_000, pin=None)
    found = await bills.query("3100000021")
    await bills.pay_online(card.resident_id, found, "k")
    await bills.run()
    async with resources.sessions() as session:
        day = await clearing.clearing_date(session, resources.settings)
    await clearing.close_through(resources.sessions, resources.settings, day)
    bills.sim.behave("WATER01", "recon_missing", times=1)
    assert await run_job(bills) == {"agreed": 1, "disagreed": 1}
    assert await run_job(bills) == {}  # an answered file is not sent again by the job

    path = f"/api/v1/settlement/bill-reconciliations/{day}/WATER01/resend"
    assert (await client.post(path)).status_code == 401
    auditor = await staff_headers(client, "aud1", Role.auditor)
    assert (await client.post(path, headers=auditor)).status_code == 403
    finance = await staff_headers(client, "fin1", Role.finance)
    missing = await client.post(
        f"/api/v1/settlement/bill-reconciliations/{day}/NOSUCH/resend", headers=finance
    )
    assert missing.status_code == 404
    asked = await client.post(path, headers=finance)
    assert asked.status_code == 200, asked.text
    assert (asked.json()["status"], asked.json()["disagreements"]) == ("sending", 1)
    again = await client.post(path, headers=finance)  # still to be sent: as it is
    assert again.json()["status"] == "sending"

    # The biller has corrected its side: its answer to the next attempt agrees.
    assert await run_job(bills) == {"agreed": 1}
    async with resources.sessions() as session:
        row = await service.one(session, day, "WATER01")
        (item,) = (
            await session.execute(
                select(BreakItem).where(BreakItem.kind == BreakKind.biller_disagreement)
            )
        ).scalars()
        audited = (
            await session.execute(
                select(AuditEntry).where(AuditEntry.action == "bills.recon_resend")
            )
        ).scalars()
        entries = [(e.actor, e.entity_id) for e in audited]
    assert (row.status, row.attempts, row.disagreements) == (ReconStatus.agreed, 2, 0)
    assert (item.status, item.resolution) == (BreakStatus.resolved, "biller_agrees")
    assert entries == [("fin1", f"{day}:WATER01")]


async def test_an_unbalanced_file_is_never_sent_again_on_request(
    bills: Bills, resources: Resources, client: httpx.AsyncClient
) -> None:
    async with resources.sessions() as session:
        day = await clearing.clearing_date(session, resources.settings)
        # A movement of the payable that no payment explains.
        await ledger.post(session, PostingRequest(
            "stray:1", "bill_payment", day,
            [Entry(AccountRef(AccountKind.bank, "DEMO"), Side.debit, 500),
             Entry(AccountRef(AccountKind.biller_payable, "WATER01"), Side.credit, 500)]))  # fmt: skip
        await session.commit()
    await clearing.close_through(resources.sessions, resources.settings, day)
    assert (await run_job(bills)).get("unbalanced") == 1
    finance = await staff_headers(client, "fin1", Role.finance)
    refused = await client.post(
        f"/api/v1/settlement/bill-reconciliations/{day}/WATER01/resend", headers=finance
    )
    assert (refused.status_code, refused.json()["error"]) == (409, "InvalidStateTransition")
