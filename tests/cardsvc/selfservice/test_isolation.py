"""Two residents: whatever B sends to any resident route, B sees and moves only B's own data
(docs/self-service.md §6). The resident is taken from the token; no route has an id to change."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cardsvc.cards.numbers import mask_card_no
from tests.cardsvc.selfservice.conftest import Resident, login
from tests.cardsvc.selfservice.test_token_kinds import RESIDENT_ROUTES

# What B sends to each resident route: a new resident route needs its line here (the first test
# fails until it has one).
REQUESTS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/api/v1/me/account"): {},
    ("GET", "/api/v1/me/statement"): {"params": {"limit": 500}},
    ("GET", "/api/v1/me/cards"): {},
    ("POST", "/api/v1/me/card/loss"): {},
    ("POST", "/api/v1/me/password"): {
        "json": {"old_password": "another resident's passphrase", "new_password": "b's new one!!"}
    },
    ("POST", "/api/v1/me/logout"): {},
    # No biller is registered here: B's bill query and payment are refused before anything
    # moves (404), and B's own bill payments are none.
    ("POST", "/api/v1/me/bills/query"): {"json": {"biller": "WATER01", "bill_key": "3100000001"}},
    ("POST", "/api/v1/me/bills/payments"): {
        "json": {"biller": "WATER01", "reference": "P-1", "idempotency_key": "k-1"}
    },
    ("GET", "/api/v1/me/bills/payments"): {},
}
REFUSED = {("POST", "/api/v1/me/bills/query"), ("POST", "/api/v1/me/bills/payments")}


def test_every_resident_route_is_tried() -> None:
    assert sorted(REQUESTS) == sorted(RESIDENT_ROUTES)


async def _state(client: httpx.AsyncClient, resident: Resident) -> dict[str, Any]:
    account = await client.get("/api/v1/me/account", headers=resident.headers)
    cards = await client.get("/api/v1/me/cards", headers=resident.headers)
    statement = await client.get("/api/v1/me/statement", headers=resident.headers)
    assert account.status_code == cards.status_code == statement.status_code == 200
    return {"account": account.json(), "cards": cards.json(), "statement": statement.json()}


@pytest.mark.parametrize(
    ("method", "path"), sorted(REQUESTS), ids=[f"{m} {p}" for m, p in sorted(REQUESTS)]
)
async def test_b_reaches_only_b(
    client: httpx.AsyncClient, resident: Resident, other: Resident, method: str, path: str
) -> None:
    a, b = resident, other
    before = await _state(client, a)
    answer = await client.request(method, path, headers=b.headers, **REQUESTS[(method, path)])
    expected = (404,) if (method, path) in REFUSED else (200, 204)
    assert answer.status_code in expected, answer.text
    # Nothing of A's in B's answer...
    assert before["account"]["reference"] not in answer.text
    assert mask_card_no(a.card.card_no) not in answer.text
    # ...and A's data, tokens and password are as they were.
    assert await _state(client, a) == before
    assert (await login(client, a.card)).status_code == 200
    if method == "GET":  # and B read B's own
        mine = await _state(client, b)
        body = answer.json()
        if path == "/api/v1/me/bills/payments":
            assert body == []
        else:
            assert body in (mine["account"], mine["cards"], mine["statement"])
