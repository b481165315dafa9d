"""Staff sessions end at once on lock, disable and role change; an unknown username costs a hash,
off the event loop like every hash; failed logins are limited per account and per address."""

from __future__ import annotations

import dataclasses
import threading

import httpx
import pytest

from cardsvc.db import read_sessions
from cardsvc.resources import Resources
from cardsvc.staff import repository
from cardsvc.staff import service as staff_service
from cardsvc.staff.auth import Role
from tests.factories import PASSWORD, create_staff, staff_headers

LOGIN = "/api/v1/staff/login"


async def _staff_id(resources: Resources, username: str) -> int:
    async with resources.sessions() as session:
        user = await repository.by_username(session, username)
        assert user is not None
        return user.id


async def test_a_locked_account_loses_its_live_token(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    clerk = await staff_headers(client, "clerk", Role.counter_operator)
    assert (await client.get("/api/v1/staff/me", headers=clerk)).status_code == 200
    for _ in range(resources.settings.staff_max_failed_logins):
        await client.post(LOGIN, json={"username": "clerk", "password": "wrong password"})
    response = await client.get("/api/v1/staff/me", headers=clerk)
    assert (response.status_code, response.json()["error"]) == (401, "NotAuthenticated")


@pytest.mark.parametrize("change", ["disable", "roles"])
async def test_disabling_or_changing_roles_ends_live_tokens(
    client: httpx.AsyncClient, resources: Resources, change: str
) -> None:
    clerk = await staff_headers(client, "clerk", Role.counter_operator, Role.auditor)
    admin = await staff_headers(client, "root", Role.administrator)
    staff_id = await _staff_id(resources, "clerk")
    if change == "disable":
        done = await client.post(f"/api/v1/staff/{staff_id}/disable", headers=admin)
    else:
        done = await client.put(
            f"/api/v1/staff/{staff_id}/roles", json={"roles": ["auditor"]}, headers=admin
        )
    assert done.status_code == 200, done.text
    assert (await client.get("/api/v1/audit", headers=clerk)).status_code == 401
    again = await client.post(LOGIN, json={"username": "clerk", "password": PASSWORD})
    if change == "disable":
        assert again.status_code == 401
        enabled = await client.post(f"/api/v1/staff/{staff_id}/enable", headers=admin)
        assert enabled.json()["active"] is True
    else:
        token = {"Authorization": f"Bearer {again.json()['access_token']}"}
        assert again.json()["roles"] == ["auditor"]
        assert (await client.get("/api/v1/audit", headers=token)).status_code == 200
        assert (await client.get("/api/v1/residents/1", headers=token)).status_code == 404
    async with resources.sessions() as session:
        from cardsvc.audit import repository as audit_repo

        actions = [e.action for e in await audit_repo.list_entries(session, entity="staff")]
    assert ("staff.disable" if change == "disable" else "staff.roles") in actions


async def test_an_unknown_username_costs_a_hash_off_the_event_loop(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cardsvc.staff import auth

    verified: list[str] = []
    loop_thread = threading.current_thread()
    real = auth._verify

    def counting(password_hash: str, password: str) -> bool:
        # An argon2 verification holds its thread for a couple of hundred milliseconds: never
        # the event loop's, which would stall every request meanwhile.
        assert threading.current_thread() is not loop_thread
        verified.append(password_hash[:9])
        return real(password_hash, password)

    monkeypatch.setattr(auth, "_verify", counting)
    await create_staff(resources, "clerk", [Role.counter_operator])
    for username in ("clerk", "nobody"):
        async with resources.sessions() as session:
            with pytest.raises(staff_service.LoginFailed) as refused:
                await staff_service.authenticate(
                    read_sessions(resources.engine), session, resources.settings, resources.cache,
                    username, "wrong password",
                )  # fmt: skip
        assert refused.value.detail == staff_service.REFUSED
    assert verified == ["$argon2id", "$argon2id"]


async def test_failed_logins_are_limited_per_address(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    limited = dataclasses.replace(
        resources,
        settings=resources.settings.model_copy(update={"staff_max_failed_logins_per_address": 3}),
    )
    from cardsvc.app import create_app

    app = create_app(limited.settings, limited)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))
    await create_staff(resources, "clerk", [Role.counter_operator])
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
        for username in ("a", "b", "c"):  # unknown usernames count too
            r = await api.post(LOGIN, json={"username": username, "password": "guess guess"})
            assert r.status_code == 401
        r = await api.post(LOGIN, json={"username": "clerk", "password": PASSWORD})
        assert (r.status_code, r.json()["error"]) == (429, "TooManyFailures")
        assert r.headers["retry-after"]
    # Another address is not held back.
    ok = await client.post(LOGIN, json={"username": "clerk", "password": PASSWORD})
    assert ok.status_code == 200
