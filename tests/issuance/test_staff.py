"""Staff: password login, signed tokens, roles per endpoint, lockout."""

from __future__ import annotations

import time

import httpx
import pytest

from cardsvc.errors import NotAuthenticated
from cardsvc.resources import Resources
from cardsvc.settings import Mode, Settings
from cardsvc.staff.auth import (
    Role,
    StaffPrincipal,
    hash_password,
    issue_token,
    verify_password,
    verify_token,
)
from tests.factories import PASSWORD, create_staff, staff_headers

SETTINGS = Settings(mode=Mode.development, hsm_url="local://dev", token_ttl_seconds=600)


async def test_password_hash_is_argon2_and_verifies() -> None:
    hashed = await hash_password("s3cret-password")
    assert hashed.startswith("$argon2id$")
    assert await verify_password(hashed, "s3cret-password")
    assert not await verify_password(hashed, "s3cret-passwore")
    assert not await verify_password("not a hash", "x")
    assert not await verify_password(None, "s3cret-password")  # an unknown account


def test_token_round_trip_expiry_and_forgery() -> None:
    principal = StaffPrincipal(7, "alice", frozenset({Role.supervisor}))
    token = issue_token(SETTINGS, principal, now=1_000_000)
    assert verify_token(SETTINGS, token, now=1_000_599) == principal
    with pytest.raises(NotAuthenticated, match="expired"):
        verify_token(SETTINGS, token, now=1_000_600)
    body, sig = token.split(".")
    forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + sig
    with pytest.raises(NotAuthenticated):
        verify_token(SETTINGS, forged, now=1_000_001)
    other = Settings(mode=Mode.development, hsm_url="local://dev", token_secret="x" * 40)
    with pytest.raises(NotAuthenticated):
        verify_token(other, token, now=1_000_001)


async def test_endpoints_name_their_roles(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/audit/verify")).status_code == 401
    bad = {"Authorization": "Bearer nonsense.token"}
    assert (await client.get("/api/v1/audit/verify", headers=bad)).status_code == 401
    operator = await staff_headers(client, "op1", Role.counter_operator)
    response = await client.get("/api/v1/audit/verify", headers=operator)
    assert response.status_code == 403
    assert "auditor" in response.json()["detail"]
    auditor = await staff_headers(client, "aud1", Role.auditor)
    assert (await client.get("/api/v1/audit/verify", headers=auditor)).status_code == 200
    # an administrator creates accounts; an operator may not
    body = {"username": "newbie", "password": "long enough pw", "roles": ["finance"]}
    assert (await client.post("/api/v1/staff", json=body, headers=operator)).status_code == 403
    admin = await staff_headers(client, "admin1", Role.administrator)
    created = await client.post("/api/v1/staff", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["roles"] == ["finance"]
    assert (await client.post("/api/v1/staff", json=body, headers=admin)).status_code == 409


async def test_lockout_after_repeated_failures(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    await create_staff(resources, "carol", [Role.counter_operator])
    limit = resources.settings.staff_max_failed_logins
    for _ in range(limit):
        r = await client.post(
            "/api/v1/staff/login", json={"username": "carol", "password": "wrong password"}
        )
        assert r.status_code == 401
    # locked now: even the right password is refused
    r = await client.post("/api/v1/staff/login", json={"username": "carol", "password": PASSWORD})
    assert r.status_code == 401
    assert "locked" in r.json()["detail"]
    admin = await staff_headers(client, "root", Role.administrator)
    me = await client.get("/api/v1/staff/me", headers=admin)
    assert me.json()["username"] == "root"
    from cardsvc.staff import repository

    async with resources.sessions() as session:
        user = await repository.by_username(session, "carol")
        assert user is not None
        staff_id = user.id
    assert (await client.post(f"/api/v1/staff/{staff_id}/unlock", headers=admin)).status_code == 200
    r = await client.post("/api/v1/staff/login", json={"username": "carol", "password": PASSWORD})
    assert r.status_code == 200
    assert r.json()["expires_in"] == resources.settings.token_ttl_seconds
    assert time.time() > 0
