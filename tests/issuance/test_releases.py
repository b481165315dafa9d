"""Balance releases of lost and cancelled cards, and the card edges: every balance has a way home,
one failing release holds up no other, the float is read under its lock, a cash refund is owed
until a counter pays it; a chip carries one live card."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import httpx
import pytest

from cardsvc import clock
from cardsvc.cards import repository as cards_repo
from cardsvc.cards import tasks
from cardsvc.cards.tasks import ReleasesFailed, release_balances
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.reader.link import InProcessLink
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from terminals.devices.card import make_blank_card
from tests.factories import resident_id, staff_headers
from tests.issuance.flow import personalize_card, register_and_apply

BANK = AccountRef(AccountKind.bank, "B1")


async def issued(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
    *,
    order: str,
    serial: str,
    balance: int,
) -> tuple[int, str]:
    """A resident with an active card whose float holds ``balance``; (resident, card number)."""
    resident, application, card_no = await register_and_apply(
        client, operator, supervisor, resident_id=resident_id(order=order), name="周杰"
    )
    with InProcessLink(make_blank_card(bytes.fromhex(serial))) as link:
        await personalize_card(resources, link, application)
    r = await client.post(f"/api/v1/applications/{application}/handover", headers=operator)
    assert r.status_code == 200, r.text
    if balance:
        async with unit_of_work(resources.sessions) as session:
            await ledger.post(session, PostingRequest(f"fund:{card_no}", "load", date.today(), [
                Entry(BANK, Side.debit, balance),
                Entry(AccountRef(AccountKind.card_float, card_no), Side.credit, balance),
            ]))  # fmt: skip
    return resident, card_no


async def book(resources: Resources, kind: AccountKind, owner: str) -> int:
    async with resources.sessions() as session:
        return await ledger.balance(session, AccountRef(kind, owner))


def after_waiting(resources: Resources) -> None:
    clock.advance(timedelta(days=resources.settings.loss_waiting_period_days, minutes=1))


async def test_a_rejected_replacement_sends_the_balance_to_the_online_account(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
) -> None:
    resident, card_no = await issued(
        client, resources, operator, supervisor, order="311", serial="2100000000000001",
        balance=4_200,
    )  # fmt: skip
    assert (await client.post(f"/api/v1/cards/{card_no}/loss", headers=operator)).status_code == 200
    r = await client.post(f"/api/v1/cards/{card_no}/replace", headers=operator)
    replacement = r.json()["replacement_application_id"]
    r = await client.post(
        f"/api/v1/applications/{replacement}/reject", json={"reason": "no photo"},
        headers=supervisor,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    after_waiting(resources)
    report = await release_balances(resources.sessions, resources.settings)
    assert (report.moved, report.amount, report.waiting_for_card) == (1, 4_200, 0)
    assert await book(resources, AccountKind.card_float, card_no) == 0
    assert await book(resources, AccountKind.resident_account, str(resident)) == 4_200
    async with resources.sessions() as session:
        card = await cards_repo.by_no(session, card_no)
        assert card is not None
        release = await cards_repo.release_for_card(session, card.id)
    assert release is not None
    assert (release.kind.value, release.refund_to, release.status.value) == (
        "cancel", "resident_account", "done",
    )  # fmt: skip


async def test_one_failing_release_holds_up_no_other_and_is_retried(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first_resident, first = await issued(
        client, resources, operator, supervisor, order="312", serial="2100000000000002",
        balance=1_000,
    )  # fmt: skip
    second_resident, second = await issued(
        client, resources, operator, supervisor, order="313", serial="2100000000000003",
        balance=2_000,
    )  # fmt: skip
    for card_no in (first, second):
        r = await client.post(
            f"/api/v1/cards/{card_no}/cancel", json={"refund_to": "resident_account"},
            headers=operator,
        )  # fmt: skip
        assert r.status_code == 200, r.text
    after_waiting(resources)
    # The first card's float cannot be read this run (its account row is unreachable, say).
    real = ledger.locked_balance

    async def failing(session: object, ref: AccountRef) -> int:
        if ref.owner_ref == first:
            raise OSError("float of the first card unreachable")
        return await real(session, ref)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger, "locked_balance", failing)
    report = await release_balances(resources.sessions, resources.settings)
    assert (report.moved, report.amount, report.failed) == (1, 2_000, 1)
    assert await book(resources, AccountKind.resident_account, str(second_resident)) == 2_000
    async with resources.sessions() as session:
        card = await cards_repo.by_no(session, first)
        assert card is not None
        kept = await cards_repo.release_for_card(session, card.id)
    assert kept is not None
    assert (kept.status.value, kept.failures, kept.last_error) == (
        "pending", 1, "OSError: float of the first card unreachable",
    )  # fmt: skip
    # The job reports it as failed (metrics, the worker's exit status), with what it did do.
    with pytest.raises(ReleasesFailed, match="0 balances"):
        await tasks.RELEASE_BALANCES.run(resources, clock.now())
    monkeypatch.setattr(ledger, "locked_balance", real)
    again = await release_balances(resources.sessions, resources.settings)
    assert (again.moved, again.amount, again.failed) == (1, 1_000, 0)
    assert await book(resources, AccountKind.resident_account, str(first_resident)) == 1_000


@pytest.mark.postgres
async def test_the_float_is_read_under_the_lock_that_posts_it(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
) -> None:
    """An upload debits the float while the release runs: the release waits for it and moves what
    is left, instead of moving a balance read before (which the float no longer holds)."""
    resident, card_no = await issued(
        client, resources, operator, supervisor, order="314", serial="2100000000000004",
        balance=5_000,
    )  # fmt: skip
    r = await client.post(
        f"/api/v1/cards/{card_no}/cancel", json={"refund_to": "resident_account"},
        headers=operator,
    )  # fmt: skip
    assert r.status_code == 200
    after_waiting(resources)
    float_ref = AccountRef(AccountKind.card_float, card_no)
    async with resources.sessions() as upload:
        await ledger.post(upload, PostingRequest("late-offline-debit", "purchase_batch",
                                                 date.today(), [
            Entry(float_ref, Side.debit, 300),
            Entry(AccountRef(AccountKind.merchant_pending, "321100000000009"), Side.credit, 300),
        ]))  # fmt: skip
        running = asyncio.create_task(release_balances(resources.sessions, resources.settings))
        await asyncio.sleep(0.5)  # the release is waiting on the float's lock
        assert not running.done()
        await upload.commit()
    report = await running
    assert (report.moved, report.amount, report.failed) == (1, 4_700, 0)
    assert await book(resources, AccountKind.card_float, card_no) == 0
    assert await book(resources, AccountKind.resident_account, str(resident)) == 4_700


async def test_a_cash_refund_is_owed_to_the_holder_until_a_counter_pays_it(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
) -> None:
    resident, card_no = await issued(
        client, resources, operator, supervisor, order="315", serial="2100000000000005",
        balance=3_300,
    )  # fmt: skip
    r = await client.post(
        f"/api/v1/cards/{card_no}/cancel",
        json={"refund_to": "counter_cash", "counter_code": "C07"},
        headers=operator,
    )
    assert r.status_code == 200, r.text
    early = await client.post(
        f"/api/v1/cards/{card_no}/cash-refund/payout", json={"counter_code": "C07"},
        headers=operator,
    )  # fmt: skip
    assert (early.status_code, early.json()["error"]) == (409, "InvalidStateTransition")
    after_waiting(resources)
    operator = await staff_headers(client, "operator-a-week-later", Role.counter_operator)
    # The drawer of C07 is empty: the release does not care, the refund is owed.
    report = await release_balances(resources.sessions, resources.settings)
    assert (report.moved, report.amount, report.failed) == (1, 3_300, 0)
    assert await book(resources, AccountKind.holder_payable, str(resident)) == 3_300
    r = await client.get(f"/api/v1/cards/{card_no}", headers=operator)
    assert (r.json()["float_balance"], r.json()["cash_to_pay_out"]) == (0, 3_300)
    payout = f"/api/v1/cards/{card_no}/cash-refund/payout"
    empty = await client.post(payout, json={"counter_code": "C07"}, headers=operator)
    assert (empty.status_code, empty.json()["error"]) == (409, "InsufficientFunds")
    async with unit_of_work(resources.sessions) as session:
        await ledger.post(session, PostingRequest("float-in:C07", "transfer", date.today(), [
            Entry(AccountRef(AccountKind.counter_cash, "C07"), Side.debit, 10_000),
            Entry(BANK, Side.credit, 10_000),
        ]))  # fmt: skip
    paid = await client.post(payout, json={"counter_code": "C07"}, headers=operator)
    assert paid.status_code == 200, paid.text
    assert (paid.json()["amount"], paid.json()["replayed"]) == (3_300, False)
    again = await client.post(payout, json={"counter_code": "C07"}, headers=operator)
    assert (again.json()["amount"], again.json()["replayed"]) == (3_300, True)
    elsewhere = await client.post(payout, json={"counter_code": "C08"}, headers=operator)
    assert elsewhere.status_code == 409
    assert await book(resources, AccountKind.holder_payable, str(resident)) == 0
    assert await book(resources, AccountKind.counter_cash, "C07") == 10_000 - 3_300
    r = await client.get(f"/api/v1/cards/{card_no}", headers=operator)
    assert r.json()["cash_to_pay_out"] == 0
    async with resources.sessions() as session:
        assert (await ledger.check_invariants(session)).ok


async def test_recovering_an_active_card_is_the_state_error(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
) -> None:
    _, card_no = await issued(
        client, resources, operator, supervisor, order="316", serial="2100000000000006", balance=0
    )
    r = await client.post(f"/api/v1/cards/{card_no}/recover", headers=operator)
    assert (r.status_code, r.json()["error"]) == (409, "InvalidStateTransition")
    assert "allowed from: lost" in r.json()["detail"]


async def test_a_chip_carries_one_live_card(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
) -> None:
    serial = "2100000000000007"
    _, first = await issued(
        client, resources, operator, supervisor, order="317", serial=serial, balance=0
    )
    _, application, _ = await register_and_apply(
        client, operator, supervisor, resident_id=resident_id(order="318"), name="林青"
    )
    # A second blank chip that reports the same serial (or the first chip put back by mistake).
    with (
        pytest.raises(Exception, match="belongs to card") as refused,
        InProcessLink(make_blank_card(bytes.fromhex(serial))) as link,
    ):
        await personalize_card(resources, link, application)
    assert first[-4:] in str(refused.value)
    r = await client.get(f"/api/v1/applications/{application}", headers=operator)
    assert r.json()["status"] == "in_production"
