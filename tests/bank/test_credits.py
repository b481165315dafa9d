"""Bank top-ups: signed notifications and credit files, matched by account reference; the
unmatched wait in suspense as breaks; finance moves them with two people."""

from __future__ import annotations

import httpx
import pytest

from cardsvc.accounts.reference import make_reference
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind, BreakStatus
from cardsvc.cards.models import Card
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from terminals.devices.bank import Bank
from tests.factories import make_card, staff_headers
from tests.terminals.helpers import balance


@pytest.fixture
def bank(client: httpx.AsyncClient) -> Bank:
    return Bank(client)


@pytest.fixture
async def card(resources: Resources) -> Card:
    return await make_card(resources, 21)


async def reference_of(client: httpx.AsyncClient, card: Card) -> str:
    headers = await staff_headers(client, f"clerk{card.id}", Role.counter_operator)
    answer = await client.post(
        "/api/v1/accounts/lookup", json={"card_no": card.card_no}, headers=headers
    )
    reference: str = answer.json()["reference"]
    return reference


def credit(
    reference: str, bank_reference: str = "B0001", amount: int = 20_000
) -> dict[str, object]:
    return {
        "bank_reference": bank_reference,
        "account_reference": reference,
        "amount": amount,
        "value_date": "2026-12-01",
        "payer_name": "张三",
    }


async def invariants_hold(resources: Resources) -> bool:
    async with resources.sessions() as s:
        return (await ledger.check_invariants(s)).ok


async def test_notification_posts_once(
    client: httpx.AsyncClient, bank: Bank, card: Card, resources: Resources
) -> None:
    reference = await reference_of(client, card)
    spaced = f"{reference[:4]} {reference[4:8]} {reference[8:]}"
    first = await bank.notify(credit(spaced))
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["replayed"]) == ("posted", False)
    replay = await bank.notify(credit(spaced))
    assert replay.json() == {**first.json(), "replayed": True}
    other = await bank.notify(credit(spaced, amount=20_001))
    assert (other.status_code, other.json()["error"]) == (409, "IdempotencyConflict")
    assert await balance(resources, AccountKind.resident_account, str(card.resident_id)) == 20_000
    assert await balance(resources, AccountKind.bank, "DEMO") == 20_000
    assert await invariants_hold(resources)


@pytest.mark.parametrize(
    "written",
    [
        "typo",  # one digit wrong: the check digits catch it
        "unknown",  # well formed, no such account
        "garbage",
    ],
)
async def test_unmatched_credit_waits_in_suspense(
    client: httpx.AsyncClient, bank: Bank, card: Card, resources: Resources, written: str
) -> None:
    reference = await reference_of(client, card)
    given = {
        "typo": reference[:6] + str((int(reference[6]) + 1) % 10) + reference[7:],
        "unknown": make_reference("3211", 777),
        "garbage": "for 张三, card ending 0013",
    }[written]
    answer = await bank.notify(credit(given))
    assert answer.json()["status"] == "suspense", answer.text
    assert await balance(resources, AccountKind.resident_account, str(card.resident_id)) == 0
    assert await balance(resources, AccountKind.suspense_bank, "DEMO") == 20_000
    async with resources.sessions() as s:
        found = await breaks.list_breaks(s, kind=BreakKind.unmatched_bank_credit)
    assert [(b.amount, b.status, b.reference) for b in found] == [
        (20_000, BreakStatus.open, "DEMO:B0001")
    ]
    # A replay opens no second break and books nothing more.
    assert (await bank.notify(credit(given))).json()["replayed"] is True
    async with resources.sessions() as s:
        assert len(await breaks.list_breaks(s, kind=BreakKind.unmatched_bank_credit)) == 1
    assert await balance(resources, AccountKind.suspense_bank, "DEMO") == 20_000
    assert await invariants_hold(resources)


async def test_signatures(
    client: httpx.AsyncClient, bank: Bank, card: Card, resources: Resources
) -> None:
    reference = await reference_of(client, card)
    body = Bank.notification(credit(reference))
    url = "/api/v1/bank/credits"
    cases = [
        {},  # none
        {"X-Bank-Code": "DEMO"},
        {"X-Bank-Code": "DEMO", "X-Bank-Signature": "00" * 32},
        {"X-Bank-Code": "DEMO", "X-Bank-Signature": bank.sign(body)[:-2]},
        {"X-Bank-Code": "OTHER", "X-Bank-Signature": bank.sign(body)},
        {"X-Bank-Code": "DEMO", "X-Bank-Signature": Bank(client, key=b"k" * 32).sign(body)},
    ]
    for headers in cases:
        refused = await client.post(url, content=body, headers=headers)
        assert (refused.status_code, refused.json()["error"]) == (401, "SignatureInvalid"), headers
    altered = body.replace(b"20000", b"90000")
    refused = await client.post(url, content=altered, headers=bank.headers(body))
    assert refused.status_code == 401
    assert await balance(resources, AccountKind.bank, "DEMO") == 0
    # A signed body that is not a valid credit is a 422 naming the field.
    bad = Bank.notification({**credit(reference), "amount": "20000"})
    refused = await client.post(url, content=bad, headers=bank.headers(bad))
    assert refused.status_code == 422


async def test_credit_file(
    client: httpx.AsyncClient, bank: Bank, card: Card, resources: Resources
) -> None:
    finance = await staff_headers(client, "finance", Role.finance)
    reference = await reference_of(client, card)
    await bank.notify(credit(reference, "B0001", 1_000))
    content = Bank.credit_file(
        [
            credit(reference, "B0001", 1_000),  # notified before: booked once
            credit(reference, "B0002", 2_000),
            credit("32110000000000", "B0003", 3_000),
            credit(reference, "B0004", 4_000),
        ]
    )
    answer = await bank.send_file(content, finance)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["lines"], body["posted"], body["suspense"], body["replayed"]) == (4, 2, 1, 1)
    assert (body["amount_posted"], body["amount_suspense"]) == (6_000, 3_000)
    assert [r["status"] for r in body["results"]] == ["replayed", "posted", "suspense", "posted"]
    again = (await bank.send_file(content, finance)).json()
    assert again["replayed"] == 4
    assert await balance(resources, AccountKind.resident_account, str(card.resident_id)) == 7_000

    # The bank repeats a reference with other content: that line books nothing and opens a break.
    changed = Bank.credit_file([credit(reference, "B0002", 2_500), credit(reference, "B0005", 5)])
    result = (await bank.send_file(changed, finance)).json()
    assert [r["status"] for r in result["results"]] == ["conflict", "posted"]
    async with resources.sessions() as s:
        assert len(await breaks.list_breaks(s, kind=BreakKind.bank_credit_conflict)) == 1
    assert await balance(resources, AccountKind.resident_account, str(card.resident_id)) == 7_005
    assert await invariants_hold(resources)

    # Only finance imports, and only with the bank's signature.
    clerk = await staff_headers(client, "clerk", Role.counter_operator)
    assert (await bank.send_file(content, clerk)).status_code == 403
    unsigned = await client.post(
        "/api/v1/bank/credit-files", content=content, headers={**finance, "X-Bank-Code": "DEMO"}
    )
    assert unsigned.status_code == 401


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"ref,account,amount\nB1,1,2\n", "header"),
        (Bank.credit_file([credit("x", "B1", 0)]), "line 2: amount"),
        (
            Bank.credit_file([credit("x", "B1", 100), {**credit("x", "B2"), "amount": "1.50"}]),
            "line 3",
        ),
        (Bank.credit_file([credit("x", "B1"), credit("x", "B1")]), "repeats"),
        (Bank.credit_file([{**credit("x", "B 1")}]), "bank_reference"),
        (Bank.credit_file([{**credit("x", "B1"), "value_date": "2026-13-01"}]), "value_date"),
        (Bank.credit_file([]), "no credit"),
        ("\ufeffbank_reference\n".encode() + b"\xff\xfe", "UTF-8"),
    ],
)
async def test_a_bad_file_books_nothing(
    client: httpx.AsyncClient, bank: Bank, resources: Resources, content: bytes, named: str
) -> None:
    finance = await staff_headers(client, "finance", Role.finance)
    answer = await bank.send_file(content, finance)
    assert answer.status_code == 422, answer.text
    assert named in answer.json()["detail"]
    assert await balance(resources, AccountKind.bank, "DEMO") == 0


async def test_suspense_moves_with_two_people(
    client: httpx.AsyncClient, bank: Bank, card: Card, resources: Resources
) -> None:
    reference = await reference_of(client, card)
    held = (await bank.notify(credit("3211 garbled"))).json()
    alice = await staff_headers(client, "alice", Role.finance)
    bob = await staff_headers(client, "bob", Role.finance)
    url = f"/api/v1/bank/credits/{held['id']}/proposal"
    early = await client.post(f"{url}/approve", headers=bob)
    assert early.status_code == 409
    proposed = await client.post(url, json={"account_reference": reference}, headers=alice)
    assert proposed.json()["proposed_account_reference"] == reference, proposed.text
    assert (await client.post(f"{url}/approve", headers=alice)).status_code == 403
    moved = await client.post(f"{url}/approve", headers=bob)
    detail = moved.json()
    assert (detail["status"], detail["assigned_by"], detail["account_reference"]) == (
        "assigned", "bob", reference,
    )  # fmt: skip
    assert await balance(resources, AccountKind.resident_account, str(card.resident_id)) == 20_000
    assert await balance(resources, AccountKind.suspense_bank, "DEMO") == 0
    async with resources.sessions() as s:
        (item,) = await breaks.list_breaks(s, kind=BreakKind.unmatched_bank_credit)
    assert (item.status, item.resolver, item.resolution) == (
        BreakStatus.resolved,
        "bob",
        "assigned",
    )
    assert (await client.post(f"{url}/approve", headers=bob)).status_code == 409
    listed = await client.get("/api/v1/bank/credits", params={"status": "suspense"}, headers=bob)
    assert listed.json() == []
    clerk = await staff_headers(client, "clerk", Role.counter_operator)
    assert (await client.get("/api/v1/bank/credits", headers=clerk)).status_code == 403
    assert await invariants_hold(resources)
