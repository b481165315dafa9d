"""The billers registry (administrator): the key checked with the HSM, changes audited."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cardsvc.audit.models import AuditEntry
from cardsvc.hsm import HsmClient
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from tests.billersim import WATER_KEY
from tests.factories import staff_headers


def biller_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": "WATER01",
        "name": "城市自来水公司",
        "category": "water",
        "endpoint": "http://127.0.0.1:9/",
        "key_label": "BILLER_WATER01",
        "bill_key_pattern": "31[0-9]{8}",
        "bank": {"bank_name": "城市银行", "account_no": "6222000011112222",
                 "account_name": "城市自来水公司"},
        "fee": {"fixed": 10, "bps": 20, "max": 200},
        "settlement_cycle": "daily",
    }  # fmt: skip
    body.update(changes)
    return body


@pytest.fixture
async def admin(client: httpx.AsyncClient) -> dict[str, str]:
    return await staff_headers(client, "admin1", Role.administrator)


async def test_register_change_suspend_close(
    client: httpx.AsyncClient, admin: dict[str, str], hsm: HsmClient, resources: Resources
) -> None:
    missing = await client.post("/api/v1/bills/billers", json=biller_body(), headers=admin)
    assert (missing.status_code, missing.json()["error"]) == (422, "ValidationFailed")
    await hsm.key_import("BILLER_WATER01", "biller-mac", WATER_KEY, "HMAC-SHA256")
    created = await client.post("/api/v1/bills/billers", json=biller_body(), headers=admin)
    assert created.status_code == 201, created.text
    out = created.json()
    assert (out["endpoint"], out["status"], out["fee"]) == (
        "http://127.0.0.1:9",
        "active",
        {"fixed": 10, "bps": 20, "max": 200},
    )
    twice = await client.post("/api/v1/bills/billers", json=biller_body(), headers=admin)
    assert twice.status_code == 409

    changed = await client.patch(
        "/api/v1/bills/billers/WATER01", json={"fee": {"fixed": 0, "bps": 50}}, headers=admin
    )
    assert changed.json()["fee"] == {"fixed": 0, "bps": 50, "max": 0}
    for status in ("suspended", "active", "closed"):
        moved = await client.post(
            "/api/v1/bills/billers/WATER01/status", json={"status": status}, headers=admin
        )
        assert moved.json()["status"] == status
    reopen = await client.post(
        "/api/v1/bills/billers/WATER01/status", json={"status": "active"}, headers=admin
    )
    assert reopen.status_code == 409
    async with resources.sessions() as s:
        actions = list(
            (
                await s.execute(select(AuditEntry.action).where(AuditEntry.entity == "biller"))
            ).scalars()
        )
    assert actions == ["bills.biller_create", "bills.biller_change"] + ["bills.biller_status"] * 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bill_key_pattern", "(31|32)[0-9]{8}"),
        ("bill_key_pattern", "[0-9]*"),
        ("endpoint", "ftp://biller"),
        ("code", "water"),
        ("fee", {"bps": 10_001}),
        ("category", "cable"),
        ("key_label", "PVK"),
    ],
)
async def test_refusals(
    client: httpx.AsyncClient, admin: dict[str, str], hsm: HsmClient, field: str, value: object
) -> None:
    await hsm.key_import("BILLER_WATER01", "biller-mac", WATER_KEY, "HMAC-SHA256")
    answer = await client.post(
        "/api/v1/bills/billers", json=biller_body(**{field: value}), headers=admin
    )
    assert answer.status_code == 422, answer.text


async def test_only_administrators_register(client: httpx.AsyncClient, hsm: HsmClient) -> None:
    finance = await staff_headers(client, "fin1", Role.finance)
    refused = await client.post("/api/v1/bills/billers", json=biller_body(), headers=finance)
    assert refused.status_code == 403
    assert (await client.get("/api/v1/bills/billers", headers=finance)).json() == []
    assert (await client.get("/api/v1/bills/billers/NOPE", headers=finance)).status_code == 404
