"""The holder's change of the online PIN at a counter (docs/accounts.md §4.4): the old PIN proves
it, wrong old PINs count and lock like any other, the new PIN obeys the rules, audited without a
PIN."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from cardsvc.audit.models import AuditEntry
from cardsvc.cards.models import Card
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from tests.cardsvc.accounts.conftest import Desk
from tests.cardsvc.accounts.test_counter import API, PIN, reference_of, set_pin
from tests.factories import staff_headers

NEW = "607294"


async def change(
    client: httpx.AsyncClient, headers: dict[str, str], desk: Desk, card: Card, old: str, new: str
) -> httpx.Response:
    reference = await reference_of(client, headers, card)
    body = {**desk.pin(card, new), "old_pin_block": desk.pin(card, old)["pin_block"]}
    return await client.post(f"{API}/{reference}/pin/change", json=body, headers=headers)


async def test_the_holder_changes_the_pin_with_the_old_one(
    resources: Resources,
    client: httpx.AsyncClient,
    operator: dict[str, str],
    desk: Desk,
    card: Card,
) -> None:
    assert (await set_pin(client, operator, desk, card)).status_code == 200
    wrong = await change(client, operator, desk, card, "113355", NEW)
    assert (wrong.status_code, wrong.json()["error"]) == (422, "WrongPin")
    weak = await change(client, operator, desk, card, PIN, "123456")
    assert (weak.status_code, weak.json()["error"]) == (422, "PinRefused")
    changed = await change(client, operator, desk, card, PIN, NEW)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["pin_tries_left"], changed.json()["pin_locked"]) == (3, False)
    stale = await change(client, operator, desk, card, PIN, "918273")  # the old PIN is gone
    assert stale.json()["error"] == "WrongPin"
    assert (await change(client, operator, desk, card, NEW, PIN)).status_code == 200
    async with resources.sessions() as s:
        entries = (
            await s.scalars(select(AuditEntry).where(AuditEntry.action == "account.pin_change"))
        ).all()
    assert len(entries) == 2
    for entry in entries:
        text = f"{entry.before} {entry.after}"
        assert PIN not in text
        assert NEW not in text


async def test_a_locked_pin_is_not_changed_but_reset(
    client: httpx.AsyncClient, operator: dict[str, str], desk: Desk, card: Card
) -> None:
    await set_pin(client, operator, desk, card)
    answers = [
        (await change(client, operator, desk, card, guess, NEW)).json()["error"]
        for guess in ("101928", "192837", "283746")
    ]
    assert answers == ["WrongPin", "WrongPin", "PinLocked"]
    locked = await change(client, operator, desk, card, PIN, NEW)
    assert (locked.status_code, locked.json()["error"]) == (423, "PinLocked")
    assert (await set_pin(client, operator, desk, card, NEW)).json()["pin_locked"] is False
    assert (await change(client, operator, desk, card, NEW, PIN)).status_code == 200


async def test_no_pin_yet_and_roles(
    client: httpx.AsyncClient, operator: dict[str, str], desk: Desk, card: Card
) -> None:
    unset = await change(client, operator, desk, card, PIN, NEW)
    assert (unset.status_code, unset.json()["error"]) == (409, "PinNotSet")
    auditor = await staff_headers(client, "auditor", Role.auditor)
    assert (await change(client, auditor, desk, card, PIN, NEW)).status_code == 403
