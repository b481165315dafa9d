"""The resident pays a bill through self-service: query, pay from the online account, follow
the state; another resident sees none of it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cardsvc.resources import Resources
from tests.billersim import SimControl
from tests.cardsvc.bills.paying import Bills, biller_client, register_billers
from tests.cardsvc.selfservice.conftest import online_resident
from tests.factories import make_card

FIRST = "3100000001"


@pytest.fixture
async def bills(resources: Resources, paying_sim: SimControl) -> AsyncIterator[Bills]:
    await register_billers(resources, paying_sim.url)
    async with biller_client(resources) as client:
        yield Bills(resources, client, paying_sim)


async def test_resident_pays_and_follows_the_state(
    bills: Bills, resources: Resources, client: httpx.AsyncClient
) -> None:
    from cardsvc.staff.auth import Role
    from tests.factories import staff_headers

    operator = await staff_headers(client, "operator", Role.counter_operator)
    me = await online_resident(
        client, operator, await make_card(resources, 41, account=20_000, pin=None)
    )
    other = await online_resident(
        client, operator, await make_card(resources, 42, account=0, pin=None), "another passphrase!"
    )
    asked = await client.post(
        "/api/v1/me/bills/query", json={"biller": "WATER01", "bill_key": FIRST}, headers=me.headers
    )
    assert asked.status_code == 200, asked.text
    body = {"biller": "WATER01", "reference": asked.json()["reference"], "idempotency_key": "a1"}
    poor = await client.post("/api/v1/me/bills/payments", json=body, headers=other.headers)
    assert (poor.status_code, poor.json()["error"]) == (409, "InsufficientFunds")
    paid = await client.post("/api/v1/me/bills/payments", json=body, headers=me.headers)
    assert paid.status_code == 201, paid.text
    again = await client.post("/api/v1/me/bills/payments", json=body, headers=me.headers)
    assert again.json()["replayed"] is True
    assert again.json()["serial"] == paid.json()["serial"]
    await bills.run()
    mine = await client.get("/api/v1/me/bills/payments", headers=me.headers)
    assert [(p["serial"], p["state"]) for p in mine.json()] == [(paid.json()["serial"], "paid")]
    theirs = await client.get("/api/v1/me/bills/payments", headers=other.headers)
    assert theirs.json() == []
    anonymous = await client.get("/api/v1/me/bills/payments")
    assert anonymous.status_code == 401
