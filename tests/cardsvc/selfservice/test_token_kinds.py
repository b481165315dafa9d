"""Resident tokens open resident routes only, and resident routes take no staff token: every route
of the app's route table, both ways (a new route is covered the day it is mounted)."""

from __future__ import annotations

import re

import httpx
import pytest

from cardsvc.api.openapi import access_of
from cardsvc.app import create_app
from cardsvc.settings import Mode, Settings
from cardsvc.staff.auth import Role
from settlement.web.auth import SESSION_COOKIE
from tests.cardsvc.selfservice.conftest import Resident
from tests.factories import staff_headers

_APP = create_app(Settings(mode=Mode.development, hsm_url="local://dev"))


def _routes(kind: str) -> list[tuple[str, str]]:
    found = []
    for path, route in _APP.state.route_table:
        if access_of(route).kind == kind:
            found += [(method, path) for method in sorted(route.methods or ())]
    return found


STAFF_ROUTES = _routes("staff")
RESIDENT_ROUTES = _routes("resident")


def _url(path: str) -> str:
    # Authentication comes before any parameter is read, so any value serves.
    return re.sub(r"\{[^}]+\}", "1", path)


async def _call(client: httpx.AsyncClient, method: str, path: str, token: str) -> httpx.Response:
    return await client.request(
        method,
        _url(path),
        # The API reads the bearer token, the finance pages their session cookie.
        headers={"Authorization": f"Bearer {token}", "Cookie": f"{SESSION_COOKIE}={token}"},
        json={} if method in ("POST", "PUT", "PATCH") else None,
    )


def test_the_route_table_has_both_kinds() -> None:
    assert len(STAFF_ROUTES) > 20
    assert ("GET", "/api/v1/me/account") in RESIDENT_ROUTES
    assert ("POST", "/api/v1/me/card/loss") in RESIDENT_ROUTES


@pytest.mark.parametrize(
    ("method", "path"), STAFF_ROUTES, ids=[f"{m} {p}" for m, p in STAFF_ROUTES]
)
async def test_no_staff_route_takes_a_resident_token(
    client: httpx.AsyncClient, resident: Resident, method: str, path: str
) -> None:
    # The token is good: it opens the resident's own routes.
    assert (await client.get("/api/v1/me/account", headers=resident.headers)).status_code == 200
    answer = await _call(client, method, path, resident.token)
    if path.startswith("/finance/"):  # a page answers "sign in" by sending to its sign-in form
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"].startswith("/finance/login")
    else:
        assert answer.status_code == 401, answer.text


@pytest.mark.parametrize(
    ("method", "path"), RESIDENT_ROUTES, ids=[f"{m} {p}" for m, p in RESIDENT_ROUTES]
)
async def test_no_resident_route_takes_a_staff_token(
    client: httpx.AsyncClient, resident: Resident, method: str, path: str
) -> None:
    headers = await staff_headers(client, "everyone", *Role)
    assert (await client.get("/api/v1/staff/me", headers=headers)).status_code == 200
    token = headers["Authorization"].removeprefix("Bearer ")
    answer = await _call(client, method, path, token)
    assert answer.status_code == 401, answer.text
    # And the resident's own data did not move.
    assert (await client.get("/api/v1/me/account", headers=resident.headers)).status_code == 200
