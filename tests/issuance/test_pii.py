"""Personal data: the masked answer, the audit trail and the stored row rebuild no resident ID;
the clear values only come by a reveal, which the audit trail records."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import inspect

from cardsvc.audit import repository as audit_repo
from cardsvc.residents.models import Resident
from cardsvc.resources import Resources
from tests.factories import resident_id

RID = resident_id("321102", "19900307", "123")
NAME = "诸葛亮"
PHONE = "13912345678"
ADDRESS = "泰州市海陵区府前路8号"


async def _register(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    body = {"resident_id": RID, "name": NAME, "phone": PHONE, "address": ADDRESS}
    response = await client.post("/api/v1/residents", json=body, headers=headers)
    assert response.status_code == 201, response.text
    rid: int = response.json()["id"]
    return rid


def _hidden(text: str) -> None:
    """Nothing here gives back more of the ID than the mask does."""
    assert RID not in text
    assert RID[6:14] not in text  # the birth date
    assert "1990-03-07" not in text
    assert RID[:6] not in text  # the county region


async def test_the_masked_answer_rebuilds_nothing(
    client: httpx.AsyncClient, operator: dict[str, str], auditor: dict[str, str]
) -> None:
    resident = await _register(client, operator)
    answer = (await client.get(f"/api/v1/residents/{resident}", headers=auditor)).json()
    assert answer["resident_id"] == RID[:3] + "*" * 11 + RID[14:]
    assert answer["birth_date"] is None
    _hidden(json.dumps(answer))
    refused = await client.get(f"/api/v1/residents/{resident}?reveal=true", headers=auditor)
    assert refused.status_code == 403


async def test_every_reveal_is_audited_and_the_trail_holds_no_personal_data(
    client: httpx.AsyncClient, resources: Resources, operator: dict[str, str]
) -> None:
    resident = await _register(client, operator)
    changed = await client.patch(
        f"/api/v1/residents/{resident}", json={"phone": "13900000000"}, headers=operator
    )
    assert changed.status_code == 200
    revealed = await client.get(f"/api/v1/residents/{resident}?reveal=true", headers=operator)
    assert (revealed.json()["resident_id"], revealed.json()["birth_date"]) == (RID, "1990-03-07")
    async with resources.sessions() as session:
        entries = await audit_repo.list_entries(session, entity="resident")
    assert [e.action for e in entries] == [
        "resident.reveal",
        "resident.update",
        "resident.register",
    ]
    assert all(e.entity_id == str(resident) for e in entries)
    trail = json.dumps([[e.before, e.after] for e in entries], ensure_ascii=False)
    _hidden(trail)
    for value in (NAME, PHONE, ADDRESS, "13900000000"):
        assert value not in trail
    assert json.loads(entries[1].after or "{}") == {"changed": ["phone"]}


async def test_the_stored_row_rebuilds_nothing(
    client: httpx.AsyncClient, resources: Resources, operator: dict[str, str]
) -> None:
    await _register(client, operator)
    async with resources.engine.connect() as conn:
        columns = await conn.run_sync(
            lambda c: {x["name"] for x in inspect(c).get_columns("residents")}
        )
    assert "birth_date" not in columns
    async with resources.sessions() as session:
        row = (await session.execute(Resident.__table__.select())).one()
    clear = " ".join(str(v) for v in row if not isinstance(v, bytes))
    _hidden(clear)
