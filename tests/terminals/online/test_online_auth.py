"""Online authorization over signed terminal requests: codes, idempotency, holds, limits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from cardsvc.blacklist import service as blacklist
from cardsvc.cards.models import CardStatus, CardType
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.ledger.schemas import AccountRef as ledger_ref
from cardsvc.resources import Resources
from terminals.devices.host_client import HostClient, encode_body
from terminals.online import repository as online_repo
from terminals.online.tasks import expire_holds
from terminals.registry.models import MerchantCategory, TerminalKind
from tests.factories import PIN, Site, make_card, make_site
from tests.terminals.helpers import available, balance, signed_in, with_pin

JSON = {"Content-Type": "application/json"}


async def call(host: HostClient, message: str, **payload: Any) -> dict[str, Any]:
    response = await host.post(f"/api/v1/online/{message}", with_pin(host, message, payload))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def resident(card_resident_id: int) -> str:
    return str(card_resident_id)


async def recorded(resources: Resources, host: HostClient, serial: int) -> tuple[str, int]:
    """(status, refunded amount) of the terminal's message ``serial`` as the database holds it."""
    async with resources.sessions() as s:
        row = await online_repo.by_serial(s, host.terminal_no, serial)
    assert row is not None
    return str(row.status), row.refunded_amount


async def test_purchase_moves_money_once_and_a_retry_gets_the_first_answer(
    resources: Resources, client: httpx.AsyncClient, shop: Site
) -> None:
    card = await make_card(resources, 1, account=10_000)
    host = await signed_in(client, shop)
    first = await call(host, "purchase", terminal_serial=7, asn=card.asn, amount=3_000)
    assert first["response_code"] == "00"
    assert first["approved"]
    assert first["approved_amount"] == 3_000
    assert len(first["auth_code"]) == 6
    again = await call(host, "purchase", terminal_serial=7, asn=card.asn, amount=3_000)
    assert again == {**first, "replayed": True}
    assert (
        await balance(resources, AccountKind.resident_account, resident(card.resident_id)) == 7_000
    )
    assert await balance(resources, AccountKind.merchant_pending, shop.merchant_no) == 3_000
    # Same serial, other content: a conflict, not a second payment.
    conflict = await host.post(
        "/api/v1/online/purchase", {"terminal_serial": 7, "asn": card.asn, "amount": 10}
    )
    assert conflict.status_code == 409
    assert (
        await balance(resources, AccountKind.resident_account, resident(card.resident_id)) == 7_000
    )


async def test_declines_are_answers_with_iso_codes(
    resources: Resources, client: httpx.AsyncClient, shop: Site
) -> None:
    host = await signed_in(client, shop)
    poor = await make_card(resources, 2, account=500)
    lost = await make_card(resources, 3, account=10_000, status=CardStatus.lost)
    frozen = await make_card(resources, 4, account=10_000, status=CardStatus.frozen)
    old = await make_card(resources, 5, account=10_000, expires_on=date(2020, 1, 1))
    listed = await make_card(resources, 6, account=10_000)
    async with unit_of_work(resources.sessions) as s:
        await blacklist.add(s, asn=listed.asn, reason="test", actor="test")
    cases = [
        ("3211999999999999", 100, "14"),
        (poor.asn, 501, "51"),
        (lost.asn, 100, "41"),
        (frozen.asn, 100, "62"),
        (old.asn, 100, "54"),
        (listed.asn, 100, "62"),
    ]
    for serial, (asn, amount, code) in enumerate(cases, start=1):
        answer = await call(host, "purchase", terminal_serial=serial, asn=asn, amount=amount)
        assert (answer["response_code"], answer["approved"], answer["approved_amount"]) == (
            code,
            False,
            0,
        ), asn
    assert await balance(resources, AccountKind.merchant_pending, shop.merchant_no) == 0
    assert await balance(resources, AccountKind.resident_account, resident(poor.resident_id)) == 500
    # A decline is also remembered: the retry gets it again even after the money arrived.
    retry = await call(host, "purchase", terminal_serial=2, asn=poor.asn, amount=501)
    assert retry["response_code"] == "51"
    assert retry["replayed"]


async def test_a_validator_may_not_charge_an_account(
    resources: Resources, client: httpx.AsyncClient
) -> None:
    bus = await make_site(resources, 502, MerchantCategory.bus, TerminalKind.validator)
    card = await make_card(resources, 7, account=10_000)
    host = await signed_in(client, bus)
    answer = await call(host, "purchase", terminal_serial=1, asn=card.asn, amount=100)
    assert (answer["response_code"], answer["approved"]) == ("58", False)
    assert answer["message"] == "transaction not permitted to terminal"
    assert await balance(resources, AccountKind.resident_account, str(card.resident_id)) == 10_000


async def test_daily_limit_by_card_type(
    resources: Resources, client: httpx.AsyncClient, shop: Site
) -> None:
    resources.settings.online_daily_limits["student"] = 5_000
    student = await make_card(resources, 7, card_type=CardType.student, account=50_000)
    adult = await make_card(resources, 8, account=50_000)
    host = await signed_in(client, shop)
    assert (await call(host, "purchase", terminal_serial=1, asn=student.asn, amount=4_000))[
        "response_code"
    ] == "00"
    assert (await call(host, "purchase", terminal_serial=2, asn=student.asn, amount=1_001))[
        "response_code"
    ] == "61"
    assert (await call(host, "purchase", terminal_serial=3, asn=student.asn, amount=1_000))[
        "response_code"
    ] == "00"
    assert (await call(host, "purchase", terminal_serial=4, asn=adult.asn, amount=6_000))[
        "response_code"
    ] == "00"
    # A reversal gives the day's allowance back.
    assert (await call(host, "reversal", terminal_serial=5, original_serial=3))[
        "response_code"
    ] == "00"
    assert (await call(host, "purchase", terminal_serial=6, asn=student.asn, amount=1_000))[
        "response_code"
    ] == "00"
    assert (
        await balance(resources, AccountKind.resident_account, resident(student.resident_id))
        == 45_000
    )


async def test_preauth_partial_completion_releases_the_rest(
    resources: Resources, client: httpx.AsyncClient, pump: Site
) -> None:
    card = await make_card(resources, 9, account=50_000)
    owner = resident(card.resident_id)
    host = await signed_in(client, pump)
    held = await call(host, "preauth", terminal_serial=1, asn=card.asn, amount=30_000)
    assert held["response_code"] == "00"
    assert await available(resources, AccountKind.resident_account, owner) == 20_000
    # Over the hold: refused; the hold stays.
    over = await call(host, "completion", terminal_serial=2, original_serial=1, amount=30_001)
    assert over["response_code"] == "12"
    done = await call(host, "completion", terminal_serial=3, original_serial=1, amount=21_350)
    assert done["response_code"] == "00"
    assert done["approved_amount"] == 21_350
    assert await balance(resources, AccountKind.resident_account, owner) == 50_000 - 21_350
    assert await available(resources, AccountKind.resident_account, owner) == 50_000 - 21_350
    assert await balance(resources, AccountKind.merchant_pending, pump.merchant_no) == 21_350
    # A second completion of the same pre-authorization is refused; a retry of the first is not.
    assert (await call(host, "completion", terminal_serial=4, original_serial=1, amount=100))[
        "response_code"
    ] == "12"
    assert (await call(host, "completion", terminal_serial=3, original_serial=1, amount=21_350))[
        "replayed"
    ]
    assert await recorded(resources, host, 1) == ("completed", 0)
    assert await recorded(resources, host, 3) == ("approved", 0)
    assert (await call(host, "completion", terminal_serial=5, original_serial=99, amount=100))[
        "response_code"
    ] == "25"


async def test_reversal_after_timeout_and_refund(
    resources: Resources, client: httpx.AsyncClient, shop: Site
) -> None:
    card = await make_card(resources, 10, account=10_000)
    owner = resident(card.resident_id)
    host = await signed_in(client, shop)
    await call(host, "purchase", terminal_serial=1, asn=card.asn, amount=2_500)
    reversed_ = await call(host, "reversal", terminal_serial=2, original_serial=1)
    assert reversed_["response_code"] == "00"
    assert reversed_["approved_amount"] == 2_500
    assert await balance(resources, AccountKind.resident_account, owner) == 10_000
    assert await recorded(resources, host, 1) == ("reversed", 0)
    # Reversing again (a retried reversal under a new serial) moves nothing.
    assert (await call(host, "reversal", terminal_serial=3, original_serial=1))[
        "approved_amount"
    ] == 0
    assert await balance(resources, AccountKind.resident_account, owner) == 10_000
    # The terminal timed out before the request arrived: the reversal comes first, the late
    # original is refused.
    assert (await call(host, "reversal", terminal_serial=5, original_serial=4))[
        "response_code"
    ] == "00"
    late = await call(host, "purchase", terminal_serial=4, asn=card.asn, amount=1_000)
    assert late["response_code"] == "12"
    assert (await call(host, "purchase", terminal_serial=4, asn=card.asn, amount=1_000))[
        "response_code"
    ] == "12"
    assert (await call(host, "reversal", terminal_serial=12, original_serial=4))[
        "response_code"
    ] == "00"
    assert (await call(host, "refund", terminal_serial=13, original_serial=4, amount=1))[
        "response_code"
    ] == "25"
    # Refund of a completed payment: partial, and never more than was paid.
    await call(host, "purchase", terminal_serial=6, asn=card.asn, amount=4_000)
    assert (await call(host, "refund", terminal_serial=7, original_serial=6, amount=1_500))[
        "response_code"
    ] == "00"
    assert (await call(host, "refund", terminal_serial=8, original_serial=6, amount=2_501))[
        "response_code"
    ] == "12"
    assert (await call(host, "refund", terminal_serial=9, original_serial=6, amount=2_500))[
        "response_code"
    ] == "00"
    assert await recorded(resources, host, 6) == ("approved", 4_000)
    assert (await call(host, "refund", terminal_serial=10, original_serial=1, amount=1))[
        "response_code"
    ] == "12"
    assert await balance(resources, AccountKind.resident_account, owner) == 10_000
    assert await balance(resources, AccountKind.merchant_pending, shop.merchant_no) == 0
    # A refunded payment is not reversed (undo the refunds instead).
    assert (await call(host, "reversal", terminal_serial=11, original_serial=6))[
        "response_code"
    ] == "12"
    # Undoing a refund gives the payment its refundable amount back.
    assert (await call(host, "reversal", terminal_serial=14, original_serial=9))[
        "response_code"
    ] == "00"
    assert await recorded(resources, host, 9) == ("reversed", 0)
    assert await recorded(resources, host, 6) == ("approved", 1_500)


async def test_preauth_reversal_voids_the_hold(
    resources: Resources, client: httpx.AsyncClient, pump: Site
) -> None:
    card = await make_card(resources, 11, account=10_000)
    host = await signed_in(client, pump)
    await call(host, "preauth", terminal_serial=1, asn=card.asn, amount=8_000)
    assert (
        await available(resources, AccountKind.resident_account, resident(card.resident_id))
        == 2_000
    )
    assert (await call(host, "reversal", terminal_serial=2, original_serial=1))[
        "response_code"
    ] == "00"
    assert (
        await available(resources, AccountKind.resident_account, resident(card.resident_id))
        == 10_000
    )
    assert await recorded(resources, host, 1) == ("voided", 0)
    assert (await call(host, "completion", terminal_serial=3, original_serial=1, amount=100))[
        "response_code"
    ] == "12"


async def test_holds_expire_and_release(
    resources: Resources, client: httpx.AsyncClient, pump: Site
) -> None:
    card = await make_card(resources, 12, account=10_000)
    owner = resident(card.resident_id)
    host = await signed_in(client, pump)
    await call(host, "preauth", terminal_serial=1, asn=card.asn, amount=9_000)
    await call(host, "preauth", terminal_serial=2, asn=card.asn, amount=1_000)
    assert await available(resources, AccountKind.resident_account, owner) == 0
    assert await expire_holds(resources.sessions) == 0  # nothing is due yet
    later = datetime.now(UTC) + timedelta(seconds=resources.settings.online_hold_expiry_seconds + 1)
    assert await expire_holds(resources.sessions, now=later) == 2
    assert await available(resources, AccountKind.resident_account, owner) == 10_000
    assert await expire_holds(resources.sessions, now=later) == 0
    assert await recorded(resources, host, 1) == ("expired", 0)
    assert (await call(host, "completion", terminal_serial=3, original_serial=1, amount=100))[
        "response_code"
    ] == "12"
    async with resources.sessions() as s:
        assert (
            await online_repo.usage(s, card.card_no, (await online_repo.get(s, 1)).local_date) == 0
        )
        assert (await ledger.check_invariants(s)).ok


@pytest.mark.parametrize("message", ["purchase", "preauth"])
async def test_unsigned_or_replayed_requests_are_refused(
    resources: Resources, client: httpx.AsyncClient, shop: Site, message: str
) -> None:
    card = await make_card(resources, 13, account=10_000)
    host = await signed_in(client, shop)
    unsigned = await client.post(
        f"/api/v1/online/{message}", json={"terminal_serial": 1, "asn": card.asn, "amount": 1}
    )
    assert unsigned.status_code in (401, 403)
    body = encode_body(
        {
            "terminal_serial": 2,
            "asn": card.asn,
            "amount": 100,
            "pin_block": host.pin_block(PIN, card.card_no),
        }
    )
    headers = host.signed_headers("POST", f"/api/v1/online/{message}", body)
    headers["Content-Type"] = "application/json"
    assert (
        await client.post(f"/api/v1/online/{message}", content=body, headers=headers)
    ).status_code == 200
    replay = await client.post(f"/api/v1/online/{message}", content=body, headers=headers)
    assert replay.status_code == 401
    assert await balance(resources, AccountKind.merchant_pending, shop.merchant_no) == (
        100 if message == "purchase" else 0
    )


async def test_the_answer_leaves_only_after_the_commit(
    resources: Resources, client: httpx.AsyncClient, shop: Site
) -> None:
    """When the first byte of the answer is sent, the payment is already visible to everyone."""
    card = await make_card(resources, 41, account=10_000)
    host = await signed_in(client, shop)
    app = client._transport.app  # type: ignore[attr-defined]
    seen_at_response: list[int] = []

    async def watching(scope: Any, receive: Any, send: Any) -> None:
        async def send_after_looking(message: Any) -> None:
            if message["type"] == "http.response.start":
                async with unit_of_work(resources.sessions) as other:
                    seen_at_response.append(
                        await ledger.balance(
                            other, ledger_ref(AccountKind.merchant_pending, shop.merchant_no)
                        )
                    )
            await send(message)

        await app(scope, receive, send_after_looking)

    transport = httpx.ASGITransport(app=watching)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as watched:
        host.http = watched
        answer = await call(host, "purchase", terminal_serial=1, asn=card.asn, amount=1_234)
    assert answer["approved"]
    assert seen_at_response == [1_234]


async def test_a_request_refused_after_authentication_still_uses_its_sequence_number(
    resources: Resources, client: httpx.AsyncClient, shop: Site
) -> None:
    card = await make_card(resources, 42, account=10_000)
    host = await signed_in(client, shop)
    await call(host, "purchase", terminal_serial=1, asn=card.asn, amount=100)
    path = "/api/v1/online/purchase"
    body = encode_body({"terminal_serial": 1, "asn": card.asn, "amount": 999})
    headers = {**host.signed_headers("POST", path, body), "Content-Type": "application/json"}
    conflict = await client.post(path, content=body, headers=headers)
    assert conflict.status_code == 409
    # The same signed request again: its sequence number was consumed by the refusal.
    replay = await client.post(path, content=body, headers=headers)
    assert replay.status_code == 401
    assert replay.json()["error"] == "ReplayRefused"
    # A body the schema refuses (422) consumes its number too (a purchase's body is read before
    # its number is taken, to check the PIN first): a good body signed with it is a replay.
    bad = encode_body({"terminal_serial": 2, "asn": card.asn, "amount": -5})
    bad_headers = {**host.signed_headers("POST", path, bad), "Content-Type": "application/json"}
    assert (await client.post(path, content=bad, headers=bad_headers)).status_code == 422
    good = encode_body(
        with_pin(host, "purchase", {"terminal_serial": 2, "asn": card.asn, "amount": 5})
    )
    same_seq = host.signed_headers("POST", path, good, seq=int(bad_headers["X-Seq"]))
    again = await client.post(path, content=good, headers={**same_seq, **JSON})
    assert again.json()["error"] == "ReplayRefused"
    assert (await call(host, "purchase", terminal_serial=2, asn=card.asn, amount=5))["approved"]
