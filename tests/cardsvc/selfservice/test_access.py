"""Activation codes, activation, login, lockout and rate limits (docs/self-service.md §2-§5)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from cardsvc import clock
from cardsvc.app import create_app
from cardsvc.audit.models import AuditEntry
from cardsvc.cache import RedisCache
from cardsvc.cards.models import Card
from cardsvc.cards.numbers import make_card_no
from cardsvc.resources import Resources
from cardsvc.selfservice.models import ResidentCredential
from tests.cardsvc.selfservice.conftest import PASSWORD, Resident, activate, issue_code, login

UNKNOWN_CARD = make_card_no("3211", 99_999_999)


async def _credential(resources: Resources, card: Card) -> ResidentCredential:
    async with resources.sessions() as s:
        found = (
            await s.execute(
                select(ResidentCredential).where(ResidentCredential.resident_id == card.resident_id)
            )
        ).scalar_one()
        return found


async def test_a_code_activates_once_and_is_kept_only_as_a_hash(
    client: httpx.AsyncClient, resources: Resources, operator: dict[str, str], card: Card
) -> None:
    code = await issue_code(client, operator, card)
    stored = await _credential(resources, card)
    bare = code.replace("-", "")
    assert stored.code_hash is not None
    assert bare not in stored.code_hash
    assert stored.password_hash is None
    async with resources.sessions() as s:
        entries = (await s.execute(select(AuditEntry))).scalars().all()
    issued = [e for e in entries if e.action == "selfservice.code_issue"]
    assert len(issued) == 1
    assert all(bare not in str(e.after) and code not in str(e.after) for e in entries)

    # Typed the way people type it: lower case, spaces, O for 0.
    typed = " ".join(code.lower().split("-")).replace("0", "o")
    first = await activate(client, card, typed)
    assert first.status_code == 200, first.text
    token = first.json()["access_token"]
    assert (
        await client.get("/api/v1/me/account", headers={"Authorization": f"Bearer {token}"})
    ).status_code == 200

    again = await activate(client, card, code, "yet another passphrase")
    assert again.status_code == 401
    assert again.json()["error"] == "ActivationFailed"
    assert (await login(client, card)).status_code == 200
    stored = await _credential(resources, card)
    assert stored.code_hash is None
    assert stored.activated_at is not None


async def test_a_new_code_supersedes_the_old_and_codes_expire(
    client: httpx.AsyncClient, resources: Resources, operator: dict[str, str], card: Card
) -> None:
    old = await issue_code(client, operator, card)
    new = await issue_code(client, operator, card)
    assert old != new
    assert (await activate(client, card, old)).status_code == 401
    clock.set_time(
        clock.now() + timedelta(seconds=resources.settings.resident_activation_code_ttl_seconds + 1)
    )
    assert (await activate(client, card, new)).status_code == 401
    clock.reset()
    fresh = await issue_code(client, operator, card)
    assert (await activate(client, card, fresh)).status_code == 200


async def test_a_code_is_bound_to_its_card(
    client: httpx.AsyncClient, operator: dict[str, str], card: Card, other_card: Card
) -> None:
    code = await issue_code(client, operator, card)
    refused = await activate(client, other_card, code)
    assert refused.status_code == 401
    assert (await activate(client, card, code)).status_code == 200


@pytest.mark.settings(resident_max_code_failures=3, resident_max_failures_per_card=100)
async def test_wrong_codes_void_the_code(
    client: httpx.AsyncClient, operator: dict[str, str], card: Card
) -> None:
    code = await issue_code(client, operator, card)
    wrong = "ZZZZ-ZZZZ-ZZZZ" if code != "ZZZZ-ZZZZ-ZZZZ" else "YYYY-YYYY-YYYY"
    for _ in range(3):
        assert (await activate(client, card, wrong)).status_code == 401
    assert (await activate(client, card, code)).status_code == 401  # void now
    assert (
        await activate(client, card, await issue_code(client, operator, card))
    ).status_code == 200


async def test_activation_checks_its_input_before_the_code(
    client: httpx.AsyncClient, operator: dict[str, str], card: Card
) -> None:
    code = await issue_code(client, operator, card)
    malformed = await activate(client, card, "not a code!!")
    assert malformed.status_code == 422
    short = await activate(client, card, code, "short")
    assert short.status_code == 422
    digits = await activate(client, card, code, "12345678901234")
    assert digits.status_code == 422
    assert digits.json()["error"] == "PasswordRefused"
    with_card = await activate(client, card, code, f"my{card.card_no}")
    assert with_card.json()["error"] == "PasswordRefused"
    assert (await activate(client, card, code)).status_code == 200  # no try was spent


async def test_a_code_needs_an_active_card_and_staff(
    client: httpx.AsyncClient, resources: Resources, operator: dict[str, str]
) -> None:
    from cardsvc.cards.models import CardStatus
    from tests.factories import make_card

    lost = await make_card(resources, 23, status=CardStatus.lost, pin=None)
    answer = await client.post(
        "/api/v1/self-service/activation-codes", json={"card_no": lost.card_no}, headers=operator
    )
    assert answer.status_code == 409
    anonymous = await client.post(
        "/api/v1/self-service/activation-codes", json={"card_no": lost.card_no}
    )
    assert anonymous.status_code == 401


async def test_reactivation_sets_a_new_password_and_ends_old_tokens(
    client: httpx.AsyncClient, operator: dict[str, str], resident: Resident
) -> None:
    answer = await client.post(
        "/api/v1/self-service/activation-codes",
        json={"card_no": resident.card.card_no},
        headers=operator,
    )
    assert answer.json()["reactivation"] is True
    assert (await login(client, resident.card)).status_code == 200  # the old one until used
    renewed = await activate(
        client, resident.card, answer.json()["activation_code"], "forgot it, new one"
    )
    assert renewed.status_code == 200
    assert (await client.get("/api/v1/me/account", headers=resident.headers)).status_code == 401
    assert (await login(client, resident.card)).status_code == 401
    assert (await login(client, resident.card, "forgot it, new one")).status_code == 200


async def test_every_refused_login_looks_the_same(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    resident: Resident,
    other_card: Card,
) -> None:
    wrong = await login(client, resident.card, "not the password")
    never_activated = await login(client, other_card)
    unknown = await client.post(
        "/api/v1/self-service/login",
        json={"card_no": UNKNOWN_CARD, "password": PASSWORD},
    )
    bodies = {(r.status_code, r.text) for r in (wrong, never_activated, unknown)}
    assert len(bodies) == 1
    assert wrong.status_code == 401


@pytest.mark.settings(resident_max_failed_logins=3, resident_lockout_seconds=600)
async def test_lockout_until_the_time_passes_or_a_counter_unlocks(
    client: httpx.AsyncClient, resources: Resources, operator: dict[str, str], resident: Resident
) -> None:
    for _ in range(3):
        assert (await login(client, resident.card, "wrong password")).status_code == 401
    locked = await login(client, resident.card)
    assert locked.status_code == 401
    # A live token stays: it was had with the right password.
    assert (await client.get("/api/v1/me/account", headers=resident.headers)).status_code == 200
    seen = await client.post(
        "/api/v1/self-service/access", json={"card_no": resident.card.card_no}, headers=operator
    )
    assert seen.json()["locked_until"] is not None
    clock.set_time(clock.now() + timedelta(seconds=601))
    assert (await login(client, resident.card)).status_code == 200
    clock.reset()

    for _ in range(3):
        await login(client, resident.card, "wrong password")
    assert (await login(client, resident.card)).status_code == 401
    unlocked = await client.post(
        "/api/v1/self-service/unlock", json={"card_no": resident.card.card_no}, headers=operator
    )
    assert unlocked.status_code == 200
    assert unlocked.json()["locked_until"] is None
    assert (await login(client, resident.card)).status_code == 200


@pytest.mark.settings(resident_max_failures_per_card=4, resident_max_failed_logins=100)
async def test_failures_per_card_number_are_rate_limited(
    client: httpx.AsyncClient, resident: Resident
) -> None:
    for _ in range(4):
        assert (await login(client, resident.card, "wrong password")).status_code == 401
    limited = await login(client, resident.card)
    assert limited.status_code == 429
    assert limited.json()["error"] == "TooManyAttempts"
    retry = int(limited.headers["Retry-After"])
    assert 1 <= retry <= 900
    # An unknown card number is limited the same way (nothing tells which cards exist).
    unknown = {"card_no": UNKNOWN_CARD, "password": "whatever it is"}
    for _ in range(4):
        assert (await client.post("/api/v1/self-service/login", json=unknown)).status_code == 401
    assert (await client.post("/api/v1/self-service/login", json=unknown)).status_code == 429
    clock.set_time(clock.now() + timedelta(seconds=retry))
    assert (await login(client, resident.card)).status_code == 200


@pytest.mark.settings(
    resident_max_failures_per_address=5,
    resident_max_failures_per_card=100,
    resident_max_failed_logins=100,
)
async def test_failures_per_address_are_rate_limited(
    client: httpx.AsyncClient, resident: Resident, other: Resident
) -> None:
    for n in range(5):
        target = resident if n % 2 else other
        assert (await login(client, target.card, "wrong password")).status_code == 401
    limited = await login(client, resident.card)
    assert limited.status_code == 429
    assert "Retry-After" in limited.headers
    # Activation attempts count and are refused the same way.
    refused = await activate(client, other.card, "ZZZZ-ZZZZ-ZZZZ")
    assert refused.status_code == 429


async def test_two_activations_with_one_code_spend_it_once(
    client: httpx.AsyncClient, operator: dict[str, str], card: Card
) -> None:
    code = await issue_code(client, operator, card)
    answers = await asyncio.gather(
        activate(client, card, code, "the first passphrase"),
        activate(client, card, code, "the second passphrase"),
    )
    assert sorted(a.status_code for a in answers) == [200, 401]
    winner = "the first passphrase" if answers[0].status_code == 200 else "the second passphrase"
    assert (await login(client, card, winner)).status_code == 200


@pytest.mark.settings(resident_max_failed_logins=3)
async def test_with_the_cache_down_the_lockout_still_holds(
    resources: Resources, operator: dict[str, str], resident: Resident
) -> None:
    down = dataclasses.replace(resources, cache=RedisCache.from_url("redis://127.0.0.1:1/0"))
    app = create_app(down.settings, down)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        assert (await login(http, resident.card)).status_code == 200
        for _ in range(3):
            assert (await login(http, resident.card, "wrong password")).status_code == 401
        assert (await login(http, resident.card)).status_code == 401
    await down.cache.close()
