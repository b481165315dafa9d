"""Counter work on the online account: lookup, the PIN from the counter's PIN pad, cash deposits
and withdrawals (with the supervisor's approval above the limit), balance and statement."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardsvc import clock
from cardsvc.accounts import service as accounts
from cardsvc.accounts.reference import check_digits, make_reference, normalize
from cardsvc.cards.models import Card
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from terminals.registry.models import MerchantCategory
from tests.cardsvc.accounts.conftest import Desk
from tests.factories import PASSWORD, make_site, staff_headers
from tests.terminals.helpers import balance, signed_in

PIN = "482915"
API = "/api/v1/accounts"


async def reference_of(client: httpx.AsyncClient, headers: dict[str, str], card: Card) -> str:
    response = await client.post(f"{API}/lookup", json={"card_no": card.card_no}, headers=headers)
    assert response.status_code == 200, response.text
    reference: str = response.json()["reference"]
    return reference


async def set_pin(
    client: httpx.AsyncClient, headers: dict[str, str], desk: Desk, card: Card, pin: str = PIN
) -> httpx.Response:
    reference = await reference_of(client, headers, card)
    return await client.post(f"{API}/{reference}/pin", json=desk.pin(card, pin), headers=headers)


async def deposit(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    reference: str,
    amount: int,
    receipt: str = "R-0001",
    counter: str = "DESK09",
) -> httpx.Response:
    body = {"counter_code": counter, "receipt_no": receipt, "amount": amount}
    return await client.post(f"{API}/{reference}/deposits", json=body, headers=headers)


async def withdraw(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    desk: Desk,
    card: Card,
    amount: int,
    receipt: str,
    pin: str = PIN,
) -> httpx.Response:
    reference = await reference_of(client, headers, card)
    body = {"counter_code": desk.counter_code, "receipt_no": receipt, "amount": amount}
    return await client.post(
        f"{API}/{reference}/withdrawals", json={**body, **desk.pin(card, pin)}, headers=headers
    )


# --- the reference ---------------------------------------------------------------------------


def test_reference_format() -> None:
    reference = make_reference("3211", 17)
    assert len(reference) == 14
    assert reference.startswith("321100000017")
    assert int(reference) % 97 == 1
    assert check_digits("321100000017") == reference[-2:]
    assert normalize(f"{reference[:4]} {reference[4:8]}-{reference[8:]}") == reference
    assert normalize(reference[:-1]) is None
    assert normalize("3211000000１798") is None  # a full-width digit


@given(account=st.integers(1, 10**8 - 1), position=st.integers(0, 13), digit=st.integers(0, 9))
def test_reference_catches_a_wrong_digit(account: int, position: int, digit: int) -> None:
    reference = make_reference("3211", account)
    typo = reference[:position] + str(digit) + reference[position + 1 :]
    assert (normalize(typo) is None) == (typo != reference)


@given(account=st.integers(1, 10**8 - 1), position=st.integers(0, 12))
def test_reference_catches_swapped_neighbours(account: int, position: int) -> None:
    reference = make_reference("3211", account)
    chars = list(reference)
    chars[position], chars[position + 1] = chars[position + 1], chars[position]
    swapped = "".join(chars)
    assert (normalize(swapped) is None) == (swapped != reference)


# --- lookup, PIN -------------------------------------------------------------------------------


async def test_lookup_opens_one_account_per_resident(
    client: httpx.AsyncClient, operator: dict[str, str], card: Card, other_card: Card
) -> None:
    first = await reference_of(client, operator, card)
    assert first == await reference_of(client, operator, card)
    assert first != await reference_of(client, operator, other_card)
    shown = (await client.get(f"{API}/{first}", headers=operator)).json()
    assert shown == {
        "reference": first,
        "resident_id": card.resident_id,
        "balance": 0,
        "held": 0,
        "available": 0,
        "pin_set": False,
        "pin_locked": False,
        "pin_tries_left": 3,
    }
    typo = first[:-1] + str((int(first[-1]) + 1) % 10)
    bad = await client.get(f"{API}/{typo}", headers=operator)
    assert (bad.status_code, bad.json()["error"]) == (422, "ValidationFailed")
    assert (
        await client.get(f"{API}/{make_reference('3211', 99999)}", headers=operator)
    ).status_code == 404


async def test_pin_set_from_the_counter_pin_pad(
    client: httpx.AsyncClient,
    operator: dict[str, str],
    desk: Desk,
    card: Card,
    other_card: Card,
    resources: Resources,
) -> None:
    assert (await set_pin(client, operator, desk, card)).json()["pin_set"] is True

    # The PIN rules are the HSM's: six digits, not repeated, not consecutive.
    for weak in ("123456", "777777", "4829"):
        refused = await set_pin(client, operator, desk, card, weak)
        assert (refused.status_code, refused.json()["error"]) == (422, "PinRefused")
        assert weak not in refused.text

    # A block for another card, or the other holder's card, is refused.
    reference = await reference_of(client, operator, card)
    typed_for_other = {**desk.pin(other_card, PIN), "card_no": card.card_no}
    unreadable = await client.post(f"{API}/{reference}/pin", json=typed_for_other, headers=operator)
    assert (unreadable.status_code, unreadable.json()["error"]) == (422, "PinBlockUnreadable")
    foreign = await client.post(
        f"{API}/{reference}/pin", json=desk.pin(other_card, PIN), headers=operator
    )
    assert foreign.status_code == 422

    # Only a signed-in counter terminal's PIN pad: a shop's is refused, so is a silent one.
    shop = await make_site(resources, 401, MerchantCategory.retail)
    shop_pad = await signed_in(client, shop)
    from_shop = {
        "card_no": card.card_no,
        "terminal_no": shop.terminal_no,
        "pin_block": shop_pad.pin_block(PIN, card.card_no),
    }
    refused = await client.post(f"{API}/{reference}/pin", json=from_shop, headers=operator)
    assert (refused.status_code, refused.json()["error"]) == (409, "PinPadUnavailable")
    await desk.pin_pad.sign_in()  # the old session ends; its PIN key with it
    stale = await client.post(
        f"{API}/{reference}/pin", json=desk.pin(card, "593716"), headers=operator
    )
    assert stale.status_code == 200


async def test_pin_routes_admit_counter_staff_only(
    client: httpx.AsyncClient, desk: Desk, card: Card, operator: dict[str, str]
) -> None:
    auditor = await staff_headers(client, "auditor", Role.auditor)
    reference = await reference_of(client, auditor, card)
    assert (
        await client.post(f"{API}/{reference}/pin", json=desk.pin(card, PIN), headers=auditor)
    ).status_code == 403
    assert (await deposit(client, auditor, reference, 100)).status_code == 403
    assert (
        await client.post(f"{API}/{reference}/pin", json=desk.pin(card, PIN))
    ).status_code == 401


# --- deposits ------------------------------------------------------------------------------


async def test_deposit_is_idempotent_by_receipt(
    client: httpx.AsyncClient, operator: dict[str, str], card: Card, resources: Resources
) -> None:
    reference = await reference_of(client, operator, card)
    first = await deposit(client, operator, reference, 50_000)
    assert first.status_code == 200, first.text
    again = await deposit(client, operator, reference, 50_000)
    assert again.json() == {**first.json(), "replayed": True}
    assert first.json()["status"] == "posted"
    assert first.json()["replayed"] is False
    other = await deposit(client, operator, reference, 40_000)
    assert (other.status_code, other.json()["error"]) == (409, "IdempotencyConflict")
    assert await balance(resources, AccountKind.resident_account, str(card.resident_id)) == 50_000
    assert await balance(resources, AccountKind.counter_cash, "DESK09") == 50_000
    # Another counter's receipt of the same number is another deposit.
    assert (await deposit(client, operator, reference, 1_000, counter="DESK10")).json()[
        "replayed"
    ] is False
    async with resources.sessions() as s:
        assert (await ledger.check_invariants(s)).ok
    shown = (await client.get(f"{API}/{reference}", headers=operator)).json()
    assert (shown["balance"], shown["available"]) == (51_000, 51_000)


@pytest.mark.parametrize(
    "body",
    [
        {"counter_code": "DESK09", "receipt_no": "R1", "amount": 0},
        {"counter_code": "DESK09", "receipt_no": "R1", "amount": -5},
        {"counter_code": "DESK09", "receipt_no": "R1", "amount": 10**11},
        {"counter_code": "DESK09", "receipt_no": "R1", "amount": 12.5},
        {"counter_code": "DESK09", "receipt_no": "R1", "amount": "100"},
        {"counter_code": "DESK 9", "receipt_no": "R1", "amount": 100},
        {"counter_code": "DESK09", "receipt_no": "", "amount": 100},
        {"counter_code": "DESK09", "receipt_no": "R1", "amount": 100, "extra": 1},
    ],
)
async def test_deposit_validation(
    client: httpx.AsyncClient, operator: dict[str, str], card: Card, body: dict[str, object]
) -> None:
    reference = await reference_of(client, operator, card)
    response = await client.post(f"{API}/{reference}/deposits", json=body, headers=operator)
    assert response.status_code == 422


# --- withdrawals ---------------------------------------------------------------------------


async def test_withdrawal_needs_the_pin_and_counts_wrong_ones(
    client: httpx.AsyncClient,
    operator: dict[str, str],
    desk: Desk,
    card: Card,
    resources: Resources,
) -> None:
    reference = await reference_of(client, operator, card)
    await deposit(client, operator, reference, 100_000)
    no_pin = await withdraw(client, operator, desk, card, 1_000, "W-1")
    assert (no_pin.status_code, no_pin.json()["error"]) == (409, "PinNotSet")
    await set_pin(client, operator, desk, card)

    paid = await withdraw(client, operator, desk, card, 30_000, "W-2")
    assert (paid.status_code, paid.json()["status"]) == (200, "posted"), paid.text
    assert await balance(resources, AccountKind.resident_account, str(card.resident_id)) == 70_000
    assert await balance(resources, AccountKind.counter_cash, "DESK09") == 70_000
    # A retry of the receipt answers the first result, whatever PIN it carries.
    assert (await withdraw(client, operator, desk, card, 30_000, "W-2", "000000")).json()[
        "replayed"
    ]

    for left in (2, 1):
        wrong = await withdraw(client, operator, desk, card, 1_000, f"W-wrong-{left}", "593716")
        assert (wrong.status_code, wrong.json()["error"]) == (422, "WrongPin")
        assert f"{left} tries left" in wrong.json()["detail"]
    locked = await withdraw(client, operator, desk, card, 1_000, "W-wrong-0", "593716")
    assert (locked.status_code, locked.json()["error"]) == (423, "PinLocked")
    # Locked: even the right PIN is refused until a counter resets it.
    refused = await withdraw(client, operator, desk, card, 1_000, "W-3")
    assert (refused.status_code, refused.json()["error"]) == (423, "PinLocked")
    shown = (await client.get(f"{API}/{reference}", headers=operator)).json()
    assert (shown["pin_locked"], shown["pin_tries_left"]) == (True, 0)

    assert (await set_pin(client, operator, desk, card, "593716")).json()["pin_locked"] is False
    assert (await withdraw(client, operator, desk, card, 1_000, "W-4", "593716")).status_code == 200
    assert await balance(resources, AccountKind.resident_account, str(card.resident_id)) == 69_000


async def test_right_pin_clears_the_count(
    client: httpx.AsyncClient, operator: dict[str, str], desk: Desk, card: Card
) -> None:
    reference = await reference_of(client, operator, card)
    await deposit(client, operator, reference, 10_000)
    await set_pin(client, operator, desk, card)
    await withdraw(client, operator, desk, card, 100, "W-a", "593716")
    await withdraw(client, operator, desk, card, 100, "W-b", "593716")
    assert (await withdraw(client, operator, desk, card, 100, "W-c")).status_code == 200
    shown = (await client.get(f"{API}/{reference}", headers=operator)).json()
    assert shown["pin_tries_left"] == 3


async def test_withdrawal_refusals_move_nothing(
    client: httpx.AsyncClient,
    operator: dict[str, str],
    desk: Desk,
    card: Card,
    other_card: Card,
    resources: Resources,
) -> None:
    reference = await reference_of(client, operator, card)
    other = await reference_of(client, operator, other_card)
    await deposit(client, operator, reference, 5_000)
    await set_pin(client, operator, desk, card)
    short = await withdraw(client, operator, desk, card, 5_001, "W-1")
    assert (short.status_code, short.json()["error"]) == (409, "InsufficientFunds")
    # The drawer pays out only the cash it holds in the books: fund the account elsewhere.
    await deposit(client, operator, other, 2_000, receipt="R-9", counter="DESK10")
    await set_pin(client, operator, desk, other_card)
    body = {
        "counter_code": "DESK10",
        "receipt_no": "W-2",
        "amount": 3_000,
        **desk.pin(other_card, PIN),
    }
    drawer = await client.post(f"{API}/{other}/withdrawals", json=body, headers=operator)
    assert (drawer.status_code, drawer.json()["error"]) == (409, "InsufficientFunds")
    assert await balance(resources, AccountKind.resident_account, str(card.resident_id)) == 5_000
    assert await balance(resources, AccountKind.counter_cash, "DESK10") == 2_000


async def test_large_withdrawal_waits_for_a_second_person(
    client: httpx.AsyncClient,
    operator: dict[str, str],
    supervisor: dict[str, str],
    desk: Desk,
    card: Card,
    resources: Resources,
) -> None:
    reference = await reference_of(client, operator, card)
    await deposit(client, operator, reference, 900_000)
    await set_pin(client, operator, desk, card)
    held = await withdraw(client, operator, desk, card, 300_000, "W-big")
    assert held.json()["status"] == "awaiting_approval", held.text
    shown = (await client.get(f"{API}/{reference}", headers=operator)).json()
    assert (shown["balance"], shown["held"], shown["available"]) == (900_000, 300_000, 600_000)
    movement = held.json()["id"]
    assert (
        await client.post(f"{API}/withdrawals/{movement}/approve", headers=operator)
    ).status_code == 403
    approved = await client.post(f"{API}/withdrawals/{movement}/approve", headers=supervisor)
    assert (approved.json()["status"], approved.json()["approver"]) == ("posted", "supervisor")
    assert await balance(resources, AccountKind.resident_account, str(card.resident_id)) == 600_000
    again = await client.post(f"{API}/withdrawals/{movement}/approve", headers=supervisor)
    assert again.status_code == 409

    # A supervisor who took the withdrawal cannot approve it; another rejects it.
    second = await withdraw(client, supervisor, desk, card, 250_000, "W-big-2")
    own = await client.post(f"{API}/withdrawals/{second.json()['id']}/approve", headers=supervisor)
    assert own.status_code == 403
    other_sup = await staff_headers(client, "supervisor2", Role.supervisor)
    rejected = await client.post(
        f"{API}/withdrawals/{second.json()['id']}/reject", headers=other_sup
    )
    assert rejected.json()["status"] == "rejected"
    shown = (await client.get(f"{API}/{reference}", headers=operator)).json()
    assert (shown["balance"], shown["held"]) == (600_000, 0)

    # Not approved in time: the hold runs out and nothing is paid.
    third = await withdraw(client, operator, desk, card, 250_000, "W-big-3")
    clock.set_time(clock.now() + timedelta(hours=2))
    login = {"username": "supervisor", "password": PASSWORD}
    token = (await client.post("/api/v1/staff/login", json=login)).json()["access_token"]
    late = await client.post(
        f"{API}/withdrawals/{third.json()['id']}/approve",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert late.json()["status"] == "expired"
    assert await balance(resources, AccountKind.resident_account, str(card.resident_id)) == 600_000
    async with resources.sessions() as s:
        assert (await ledger.check_invariants(s)).ok


# --- statement ------------------------------------------------------------------------------


async def test_statement_pages_and_dates(
    client: httpx.AsyncClient,
    operator: dict[str, str],
    desk: Desk,
    card: Card,
    resources: Resources,
) -> None:
    reference = await reference_of(client, operator, card)
    start = clock.now().replace(microsecond=0) - timedelta(days=3)
    for day in range(3):
        clock.set_time(start + timedelta(days=day))
        async with unit_of_work(resources.sessions) as s:
            account = await accounts.by_reference(s, reference)
            await accounts.deposit(
                s, resources.settings, account, counter_code="DESK09", receipt_no=f"R-{day}",
                amount=1_000 * (day + 1), actor="operator",
            )  # fmt: skip
    clock.reset()
    await set_pin(client, operator, desk, card)
    await withdraw(client, operator, desk, card, 500, "W-1")
    url = f"{API}/{reference}/statement"
    whole = (await client.get(url, headers=operator)).json()
    assert [line["amount"] for line in whole["lines"]] == [1_000, 2_000, 3_000, -500]
    assert [line["balance_after"] for line in whole["lines"]] == [1_000, 3_000, 6_000, 5_500]
    assert whole["opening_balance"] == 0
    assert whole["next_after"] is None
    assert whole["lines"][0]["tx_type"] == "account_deposit"

    page = (await client.get(url, params={"limit": 2}, headers=operator)).json()
    assert [line["amount"] for line in page["lines"]] == [1_000, 2_000]
    rest = (
        await client.get(url, params={"limit": 2, "after": page["next_after"]}, headers=operator)
    ).json()
    assert [line["amount"] for line in rest["lines"]] == [3_000, -500]
    assert rest["opening_balance"] == 3_000
    assert rest["next_after"] is None

    from zoneinfo import ZoneInfo

    second_day = (start + timedelta(days=1)).astimezone(ZoneInfo("Asia/Shanghai")).date()
    one_day = (
        await client.get(
            url, params={"from_date": str(second_day), "to_date": str(second_day)}, headers=operator
        )
    ).json()
    assert [line["amount"] for line in one_day["lines"]] == [2_000]
    assert one_day["opening_balance"] == 1_000
    backwards = await client.get(
        url, params={"from_date": "2030-01-02", "to_date": "2030-01-01"}, headers=operator
    )
    assert backwards.status_code == 422
    assert (await client.get(url, params={"limit": 501}, headers=operator)).status_code == 422


async def test_a_refusal_after_the_right_pin_costs_no_try(
    client: httpx.AsyncClient, operator: dict[str, str], desk: Desk, card: Card
) -> None:
    reference = await reference_of(client, operator, card)
    await set_pin(client, operator, desk, card)
    for n in range(4):
        short = await withdraw(client, operator, desk, card, 100, f"W-{n}")
        assert (short.status_code, short.json()["error"]) == (409, "InsufficientFunds")
    shown = (await client.get(f"{API}/{reference}", headers=operator)).json()
    assert (shown["pin_tries_left"], shown["pin_locked"]) == (3, False)


@pytest.mark.postgres
async def test_concurrent_guesses_take_no_more_tries_than_are_left(
    client: httpx.AsyncClient, operator: dict[str, str], desk: Desk, card: Card
) -> None:
    reference = await reference_of(client, operator, card)
    await deposit(client, operator, reference, 10_000)
    await set_pin(client, operator, desk, card)
    guesses = [f"{n:06d}" for n in range(102_938, 102_950)]
    answers = await asyncio.gather(
        *(withdraw(client, operator, desk, card, 100, f"W-{g}", g) for g in guesses)
    )
    errors = sorted(a.json()["error"] for a in answers)
    assert set(errors) <= {"WrongPin", "PinLocked", "PinChecksBusy"}
    # Exactly three tries were taken: two answered wrong, the third locked; the rest found them
    # all taken by checks still running (busy) or found the lock.
    assert errors.count("WrongPin") == 2
    shown = (await client.get(f"{API}/{reference}", headers=operator)).json()
    assert (shown["pin_tries_left"], shown["pin_locked"]) == (0, True)
