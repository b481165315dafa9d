"""Numbers a terminal sends are JSON integers in their documented range: a string, a fraction, a
boolean or a value out of range is 422 naming the field, never a 500 and never approved."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cardsvc.ledger.models import AccountKind
from cardsvc.resources import Resources
from tests.factories import Site, make_card
from tests.terminals.helpers import balance, signed_in

BAD_AMOUNTS = ["100", 100.0, True, 0, -1, 2**32, 10**30]


def names(response: httpx.Response) -> list[str]:
    return [".".join(str(p) for p in error["loc"]) for error in response.json()["fields"]]


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
async def test_online_amounts_are_strict(
    resources: Resources, client: httpx.AsyncClient, shop: Site, amount: Any
) -> None:
    card = await make_card(resources, 61, account=10_000)
    host = await signed_in(client, shop)
    response = await host.post(
        "/api/v1/online/purchase", {"terminal_serial": 1, "asn": card.asn, "amount": amount}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "RequestValidationFailed"
    assert names(response) == ["body.amount"]
    assert await balance(resources, AccountKind.resident_account, str(card.resident_id)) == 10_000


@pytest.mark.parametrize(
    ("message", "field", "value"),
    [
        ("purchase", "terminal_serial", "1"),
        ("purchase", "terminal_serial", 10**30),
        ("completion", "original_serial", 1.0),
        ("reversal", "original_serial", 2**32),
        ("refund", "amount", "5"),
    ],
)
async def test_serials_are_strict_everywhere(
    client: httpx.AsyncClient, shop: Site, message: str, field: str, value: Any
) -> None:
    host = await signed_in(client, shop)
    body: dict[str, Any] = {"terminal_serial": 9, "original_serial": 1, "amount": 5}
    if message == "purchase":
        body = {"terminal_serial": 9, "asn": "3211000000000001", "amount": 5}
    if message == "reversal":
        del body["amount"]
    response = await host.post(f"/api/v1/online/{message}", {**body, field: value})
    assert response.status_code == 422, response.text
    assert names(response) == [f"body.{field}"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", "5000"), ("amount", 5000.0), ("balance", 10**30), ("online_counter", 65536),
     ("key_version", "1"), ("algorithm", 256), ("terminal_serial", -1)],
)  # fmt: skip
async def test_load_numbers_are_strict(
    resources: Resources, client: httpx.AsyncClient, counter: Site, field: str, value: Any
) -> None:
    card = await make_card(resources, 62)
    host = await signed_in(client, counter)
    body = {
        "terminal_serial": 1, "terminal_no": counter.terminal_no, "asn": card.asn,
        "amount": 5000, "source": "cash", "balance": 0, "online_counter": 0, "key_version": 1,
        "algorithm": 0, "random": "00000000", "mac1": "00000000", field: value,
    }  # fmt: skip
    response = await host.post("/api/v1/loads", body)
    assert response.status_code == 422, response.text
    assert names(response) == [f"body.{field}"]
    assert await balance(resources, AccountKind.card_float, card.card_no) == 0


async def test_sign_in_versions_and_list_queries_are_bounded(
    client: httpx.AsyncClient, shop: Site
) -> None:
    from terminals.devices.host_client import HostClient, dev_tmk

    huge = HostClient(client, shop.terminal_no, dev_tmk(shop.terminal_no), blacklist_version=10**30)
    with pytest.raises(Exception, match="422") as refused:
        await huge.sign_in()
    assert "'loc': ['body', 'blacklist_version']" in str(refused.value)
    host = await signed_in(client, shop)
    listed = await host.get(f"/api/v1/terminal/lists/blacklist?since={10**30}")
    assert (listed.status_code, names(listed)) == (422, ["query.since"])
    reported = await host.post(
        "/api/v1/terminal/lists/versions", {"blacklist_version": "3", "params_version": 0}
    )
    assert (reported.status_code, names(reported)) == (422, ["body.blacklist_version"])
