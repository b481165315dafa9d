"""The counter flow over the API, shared by the in-process and the pcscd scenarios."""

from __future__ import annotations

from typing import Any

import httpx

from cardsvc.personalization.local import PersoResult, personalize
from cardsvc.reader.link import CardLink
from cardsvc.reader.relay import relay
from cardsvc.resources import Resources


async def register_and_apply(
    client: httpx.AsyncClient,
    operator: dict[str, str],
    supervisor: dict[str, str],
    *,
    resident_id: str,
    name: str,
) -> tuple[int, int, str]:
    """Resident → application → approval → production; returns (resident, application, card_no)."""
    r = await client.post(
        "/api/v1/residents",
        json={
            "resident_id": resident_id,
            "name": name,
            "phone": "13800000000",
            "address": "泰州市海陵区1号",
        },
        headers=operator,
    )
    assert r.status_code == 201, r.text
    resident = r.json()["id"]
    r = await client.post("/api/v1/applications", json={"resident_id": resident}, headers=operator)
    assert r.status_code == 201, r.text
    application = r.json()["id"]
    r = await client.post(f"/api/v1/applications/{application}/approve", headers=supervisor)
    assert r.status_code == 200, r.text
    r = await client.post(f"/api/v1/applications/{application}/production", headers=operator)
    assert r.status_code == 200, r.text
    return resident, application, r.json()["card_no"]


async def personalize_card(resources: Resources, link: CardLink, application: int) -> PersoResult:
    return await personalize(
        resources,
        link,
        application,
        reader="test",
        actor="operator",
    )


async def personalize_over_api(
    client: httpx.AsyncClient, headers: dict[str, str], link: CardLink, application: int
) -> dict[str, Any]:
    """What the counter agent does: start the session, relay every batch; the last answer."""
    r = await client.post(
        "/api/v1/personalization/sessions",
        json={"application_id": application, "atr": link.atr().hex()},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    turn: dict[str, Any] = r.json()
    while turn["state"] == "running":
        responses = relay(link, [bytes.fromhex(c) for c in turn["commands"]])
        r = await client.post(
            f"/api/v1/personalization/sessions/{turn['session_id']}/steps",
            json={"seq": turn["seq"], "responses": [x.hex() for x in responses]},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        turn = r.json()
    return turn
