"""The bills routes: a counter queries and takes cash, hands back the cash of a payment that did
not pay, reads the state; billers' callbacks are verified before their body is read."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cardsvc import clock
from cardsvc.bills import signing
from cardsvc.ledger.models import AccountKind
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from tests.billersim import WATER_KEY, SimControl
from tests.cardsvc.bills.paying import Bills, biller_client, register_billers
from tests.factories import staff_headers

FIRST = "3100000001"


@pytest.fixture
async def bills(resources: Resources, paying_sim: SimControl) -> AsyncIterator[Bills]:
    await register_billers(resources, paying_sim.url)
    async with biller_client(resources) as client:
        yield Bills(resources, client, paying_sim)


@pytest.fixture
async def operator(client: httpx.AsyncClient) -> dict[str, str]:
    return await staff_headers(client, "operator", Role.counter_operator)


async def _pay_cash(
    client: httpx.AsyncClient, headers: dict[str, str], receipt: str = "R-1", **extra: Any
) -> httpx.Response:
    query = await client.post(
        "/api/v1/bills/query", json={"biller": "WATER01", "bill_key": FIRST}, headers=headers
    )
    assert query.status_code == 200, query.text
    body = {"biller": "WATER01", "reference": query.json()["reference"],
            "counter_code": "DESK09", "receipt_no": receipt, **extra}  # fmt: skip
    return await client.post("/api/v1/bills/payments/counter", json=body, headers=headers)


async def test_counter_cash_paid(
    bills: Bills, client: httpx.AsyncClient, operator: dict[str, str]
) -> None:
    paid = await _pay_cash(client, operator)
    assert paid.status_code == 201, paid.text
    out = paid.json()
    assert (out["state"], out["receipt"], out["amount"]) == ("pending", "R-1", 12_850)
    again = await client.post(
        "/api/v1/bills/payments/counter",
        json={"biller": "WATER01", "reference": "P-x", "counter_code": "DESK09",
              "receipt_no": "R-1"},
        headers=operator,
    )  # fmt: skip
    assert (again.status_code, again.json()["error"]) == (409, "IdempotencyConflict")
    await bills.run()
    got = await client.get(f"/api/v1/bills/payments/{out['serial']}", headers=operator)
    assert (got.json()["state"], got.json()["receipt_no"] is not None) == ("paid", True)
    assert await bills.balance(AccountKind.counter_cash, "DESK09") == 12_850
    assert await bills.balance(AccountKind.bill_suspense, "DESK09") == 0
    assert await bills.balance(AccountKind.biller_payable, "WATER01") == 12_850
    refused = await client.post(
        f"/api/v1/bills/payments/{out['serial']}/cash-return",
        json={"counter_code": "DESK09"}, headers=operator,
    )  # fmt: skip
    assert refused.status_code == 409


async def test_counter_cash_of_a_refusal_is_handed_back(
    bills: Bills, client: httpx.AsyncClient, operator: dict[str, str]
) -> None:
    bills.sim.behave("WATER01", "refuse")
    serial = (await _pay_cash(client, operator)).json()["serial"]
    await bills.run()
    assert await bills.balance(AccountKind.bill_suspense, "DESK09") == 12_850
    path = f"/api/v1/bills/payments/{serial}/cash-return"
    elsewhere = await client.post(path, json={"counter_code": "DESK01"}, headers=operator)
    assert elsewhere.status_code == 409
    for _ in range(2):
        back = await client.post(path, json={"counter_code": "DESK09"}, headers=operator)
        assert back.status_code == 200, back.text
        assert back.json()["state"] == "failed"
    assert await bills.balance(AccountKind.bill_suspense, "DESK09") == 0
    assert await bills.balance(AccountKind.counter_cash, "DESK09") == 0


async def test_query_refusals(
    bills: Bills, client: httpx.AsyncClient, operator: dict[str, str]
) -> None:
    async def ask(body: dict[str, Any]) -> tuple[int, str]:
        answer = await client.post("/api/v1/bills/query", json=body, headers=operator)
        return answer.status_code, answer.json().get("error", "")

    assert await ask({"biller": "WATER01", "bill_key": "3100077777"}) == (404, "NoSuchCustomer")
    assert await ask({"biller": "WATER01", "bill_key": "3100099999"}) == (409, "NothingDue")
    assert await ask({"biller": "WATER01", "bill_key": "4100000001"}) == (422, "BillKeyInvalid")
    assert await ask({"biller": "NOPE", "bill_key": FIRST}) == (404, "NotFound")
    bills.sim.behave("WATER01", "down")
    assert await ask({"biller": "WATER01", "bill_key": FIRST}) == (503, "BillerNotAnswering")
    bills.sim.behave("WATER01", "error")
    assert await ask({"biller": "WATER01", "bill_key": FIRST}) == (503, "BillerNotAnswering")
    anonymous = await client.post("/api/v1/bills/query", json={"biller": "WATER01",
                                                                "bill_key": FIRST})  # fmt: skip
    assert anonymous.status_code == 401


def _signed(path: str, body: bytes, key: bytes = WATER_KEY, **headers: str) -> dict[str, str]:
    stamp = headers.pop("stamp", signing.timestamp(clock.now()))
    idem = headers.pop("key", "callback:B1:1")
    signature = hmac.new(
        key, signing.signed_string("POST", path, stamp, idem, body), hashlib.sha256
    ).hexdigest()
    return {
        "Content-Type": "application/json", "X-Bill-Channel": "CITYCARD",
        "X-Bill-Biller": "WATER01", "X-Bill-Timestamp": stamp, "Idempotency-Key": idem,
        "X-Bill-Signature": signature, **headers,
    }  # fmt: skip


async def test_callbacks_verified_before_parsing(
    bills: Bills, client: httpx.AsyncClient, operator: dict[str, str]
) -> None:
    bills.sim.behave("WATER01", "pending", delay_ms=60_000, bill_key=FIRST)
    serial = (await _pay_cash(client, operator)).json()["serial"]
    await bills.run()
    path = "/api/v1/bills/callbacks/WATER01"
    receipt = "R-CB-1"
    body = json.dumps({"serial": serial, "result": "success", "receipt_no": receipt}).encode()

    async def send(content: bytes, headers: dict[str, str], at: str = path) -> httpx.Response:
        return await client.post(at, content=content, headers=headers)

    assert (await send(body, _signed(path, body, key=bytes(32)))).status_code == 401
    stale = _signed(path, body, stamp="2020-01-01T00:00:00Z")
    assert (await send(body, stale)).status_code == 401
    assert (await send(b"not json", _signed(path, b"x"))).status_code == 401
    unknown = await send(body, _signed("/api/v1/bills/callbacks/NOPE01", body),
                         "/api/v1/bills/callbacks/NOPE01")  # fmt: skip
    assert unknown.status_code == 401
    junk = b'{"serial": 1}'
    assert (await send(junk, _signed(path, junk))).status_code == 400
    other = json.dumps({"serial": "B99999999999", "result": "success", "receipt_no": "x"}).encode()
    assert (await send(other, _signed(path, other))).status_code == 404
    for _ in range(2):
        ack = await send(body, _signed(path, body))
        assert (ack.status_code, ack.json()) == (200, {"result": "ack"})
        assert ack.headers["X-Bill-Signature"]
    got = await client.get(f"/api/v1/bills/payments/{serial}", headers=operator)
    assert (got.json()["state"], got.json()["receipt_no"]) == ("paid", receipt)
    failure = json.dumps({"serial": serial, "result": "failure", "reason": "refused"}).encode()
    assert (await send(failure, _signed(path, failure))).status_code == 409
    assert await bills.balance(AccountKind.biller_payable, "WATER01") == 12_850
