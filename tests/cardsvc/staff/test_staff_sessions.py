"""Staff sessions end at once on lock, disable and role change; an unknown username costs a hash,
off the event loop like every hash; failed logins are limited per account and per address."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

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


def _request(peer: str, forwarded: list[str]) -> Any:
    from starlette.requests import Request

    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "headers": headers, "client": (peer, 5000)})


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "address"),
    [
        ([], "10.0.0.2", ["198.51.100.9"], "10.0.0.2"),  # default: no proxy believed
        (["10.0.0.0/8"], "192.0.2.1", ["198.51.100.9"], "192.0.2.1"),  # the peer is no proxy
        (["10.0.0.0/8"], "10.0.0.2", ["198.51.100.9"], "198.51.100.9"),
        (["10.0.0.0/8"], "10.0.0.2", [], "10.0.0.2"),
        # What the client wrote itself is left of the hop the proxy added: never believed.
        (["10.0.0.0/8"], "10.0.0.2", ["1.2.3.4, 198.51.100.9"], "198.51.100.9"),
        (
            ["10.0.0.0/8", "127.0.0.1"],
            "127.0.0.1",
            ["1.2.3.4", "198.51.100.9, 10.1.1.1"],
            "198.51.100.9",
        ),
        (["10.0.0.0/8"], "10.0.0.2", ["garbage, 10.3.3.3"], "10.3.3.3"),
        (["10.0.0.0/8"], "10.0.0.2", ["2001:db8::1"], "2001:db8::1"),
    ],
)
def test_the_client_address_believes_only_trusted_proxies(
    resources: Resources, trusted: list[str], peer: str, forwarded: list[str], address: str
) -> None:
    from cardsvc.deps import client_address
    from cardsvc.settings import Settings

    settings = Settings.model_validate(
        {**resources.settings.model_dump(), "trusted_proxies": trusted}
    )
    assert client_address(_request(peer, forwarded), settings) == address


async def test_behind_a_trusted_proxy_failed_logins_count_per_forwarded_address(
    resources: Resources,
) -> None:
    from cardsvc.app import create_app
    from cardsvc.settings import Settings

    settings = Settings.model_validate(
        {**resources.settings.model_dump(), "staff_max_failed_logins_per_address": 2,
         "trusted_proxies": ["127.0.0.1"]}
    )  # fmt: skip
    app = create_app(settings, dataclasses.replace(resources, settings=settings))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    await create_staff(resources, "clerk", [Role.counter_operator])
    guessing = {"X-Forwarded-For": "203.0.113.7"}
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
        for username in ("a", "b"):
            r = await api.post(
                LOGIN, json={"username": username, "password": "x"}, headers=guessing
            )
            assert r.status_code == 401
        right = {"username": "clerk", "password": PASSWORD}
        r = await api.post(LOGIN, json=right, headers=guessing)
        assert (r.status_code, r.json()["error"]) == (429, "TooManyFailures")
        # Another client behind the same proxy is not held back.
        r = await api.post(LOGIN, json=right, headers={"X-Forwarded-For": "198.51.100.9"})
        assert r.status_code == 200
