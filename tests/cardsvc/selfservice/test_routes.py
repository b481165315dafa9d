"""The resident's own routes (docs/self-service.md §6): account, statement, cards, loss report,
password change, logout."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select

from cardsvc import clock
from cardsvc.audit.models import AuditEntry
from cardsvc.blacklist import service as blacklist
from cardsvc.cards.numbers import mask_card_no
from cardsvc.resources import Resources
from tests.cardsvc.selfservice.conftest import Resident, login


async def test_the_account_and_its_statement(
    client: httpx.AsyncClient, resources: Resources, resident: Resident
) -> None:
    account = await client.get("/api/v1/me/account", headers=resident.headers)
    assert account.status_code == 200, account.text
    body = account.json()
    assert body["balance"] == 12_345
    assert body["available"] == 12_345
    assert len(body["reference"]) == 14
    assert "resident_id" not in body

    page = await client.get("/api/v1/me/statement", headers=resident.headers)
    assert page.status_code == 200, page.text
    lines = page.json()["lines"]
    assert [line["amount"] for line in lines] == [12_345]
    assert page.json()["account_reference"] == body["reference"]

    tomorrow = resources.settings.local_date(clock.now() + timedelta(days=1)).isoformat()
    later = await client.get(
        "/api/v1/me/statement", params={"from_date": tomorrow}, headers=resident.headers
    )
    assert later.json()["lines"] == []
    backwards = await client.get(
        "/api/v1/me/statement",
        params={"from_date": tomorrow, "to_date": "2000-01-01"},
        headers=resident.headers,
    )
    assert backwards.status_code == 422
    too_many = await client.get(
        "/api/v1/me/statement", params={"limit": 501}, headers=resident.headers
    )
    assert too_many.status_code == 422


async def test_the_cards_show_status_balance_and_blacklist(
    client: httpx.AsyncClient, resident: Resident
) -> None:
    answer = await client.get("/api/v1/me/cards", headers=resident.headers)
    assert answer.status_code == 200, answer.text
    (card,) = answer.json()["cards"]
    assert card["card_no"] == mask_card_no(resident.card.card_no)
    assert card["status"] == "active"
    assert card["blacklisted"] is False
    assert card["purse_balance"] == 0


async def test_a_loss_report_blacklists_at_once_once_and_ends_the_sessions(
    client: httpx.AsyncClient, resources: Resources, resident: Resident
) -> None:
    reported = await client.post("/api/v1/me/card/loss", headers=resident.headers)
    assert reported.status_code == 200, reported.text
    body = reported.json()
    assert body["card"]["status"] == "lost"
    assert body["card"]["blacklisted"] is True
    assert body["already_reported"] is False
    assert body["sessions_ended"] is True
    async with resources.sessions() as s:
        assert await blacklist.is_blacklisted(s, resident.card.asn)
        entries = (await s.execute(select(AuditEntry))).scalars().all()
    losses = [e for e in entries if e.action == "card.report_loss"]
    assert [e.actor for e in losses] == [f"resident:{resident.card.resident_id}"]

    assert (await client.get("/api/v1/me/cards", headers=resident.headers)).status_code == 401
    again = await login(client, resident.card)  # a lost card's number still logs in
    assert again.status_code == 200
    headers = {"Authorization": f"Bearer {again.json()['access_token']}"}
    repeated = await client.post("/api/v1/me/card/loss", headers=headers)
    assert repeated.status_code == 200
    assert repeated.json()["already_reported"] is True
    assert repeated.json()["blacklist_version"] == body["blacklist_version"]
    assert (await client.get("/api/v1/me/cards", headers=headers)).status_code == 200
    async with resources.sessions() as s:
        entries = (await s.execute(select(AuditEntry))).scalars().all()
    assert len([e for e in entries if e.action == "card.report_loss"]) == 1


async def test_the_password_change_needs_the_old_one_and_ends_other_tokens(
    client: httpx.AsyncClient, resident: Resident
) -> None:
    second = (await login(client, resident.card)).json()["access_token"]
    wrong = await client.post(
        "/api/v1/me/password",
        json={"old_password": "not the password", "new_password": "a brand new passphrase"},
        headers=resident.headers,
    )
    assert wrong.status_code == 422
    assert wrong.json()["error"] == "WrongPassword"
    refused = await client.post(
        "/api/v1/me/password",
        json={"old_password": resident.password, "new_password": "1234567890123"},
        headers=resident.headers,
    )
    assert refused.json()["error"] == "PasswordRefused"
    changed = await client.post(
        "/api/v1/me/password",
        json={"old_password": resident.password, "new_password": "a brand new passphrase"},
        headers=resident.headers,
    )
    assert changed.status_code == 200, changed.text
    fresh = {"Authorization": f"Bearer {changed.json()['access_token']}"}
    assert (await client.get("/api/v1/me/account", headers=fresh)).status_code == 200
    for old in (resident.headers, {"Authorization": f"Bearer {second}"}):
        assert (await client.get("/api/v1/me/account", headers=old)).status_code == 401
    assert (await login(client, resident.card)).status_code == 401
    assert (await login(client, resident.card, "a brand new passphrase")).status_code == 200


async def test_logout_ends_every_token(client: httpx.AsyncClient, resident: Resident) -> None:
    second = (await login(client, resident.card)).json()["access_token"]
    assert (await client.post("/api/v1/me/logout", headers=resident.headers)).status_code == 204
    for headers in (resident.headers, {"Authorization": f"Bearer {second}"}):
        assert (await client.get("/api/v1/me/account", headers=headers)).status_code == 401


async def test_a_token_expires(
    client: httpx.AsyncClient, resources: Resources, resident: Resident
) -> None:
    clock.set_time(clock.now() + timedelta(seconds=resources.settings.resident_token_ttl_seconds))
    expired = await client.get("/api/v1/me/account", headers=resident.headers)
    assert expired.status_code == 401
