"""Resident tokens open resident routes only, and resident routes take no staff token: every route
of the app's route table, both ways (a new route is covered the day it is mounted)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio

from cardsvc.api.openapi import access_of
from cardsvc.app import create_app
from cardsvc.settings import Mode, Settings
from cardsvc.staff import auth as staff_auth
from cardsvc.staff.auth import Role
from settlement.web.auth import SESSION_COOKIE
from tests.cardsvc.selfservice.conftest import Resident, online_resident
from tests.conftest import TEST_HASHER, module_resources
from tests.factories import make_card, staff_headers

_APP = create_app(Settings(mode=Mode.development, hsm_url="local://dev"))


def _routes(kind: str) -> list[tuple[str, str]]:
    found = []
    for path, route in _APP.state.route_table:
        if access_of(route).kind == kind:
            found += [(method, path) for method in sorted(route.methods or ())]
    return found


STAFF_ROUTES = _routes("staff")
RESIDENT_ROUTES = _routes("resident")


# Every test of this module reads one world, built once per backend: a resident logged in and
# a staff account holding every role. Each test sends a token the route refuses (nothing
# written) and reads the resident's account. The tests run in the module's event loop, the
# world's.
IN_THE_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Shared:
    client: httpx.AsyncClient
    resident: Resident
    staff: dict[str, str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Shared]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(staff_auth, "_hasher", TEST_HASHER)
        async with module_resources(
            module_database_url, tmp_path_factory.mktemp("token-kinds")
        ) as resources:
            app = create_app(resources.settings, resources)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                operator = await staff_headers(http, "operator", Role.counter_operator)
                card = await make_card(resources, 21, account=12_345, pin=None)
                resident = await online_resident(http, operator, card)
                yield Shared(http, resident, await staff_headers(http, "everyone", *Role))


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
@IN_THE_MODULE_LOOP
async def test_no_staff_route_takes_a_resident_token(
    shared: Shared, method: str, path: str
) -> None:
    client, resident = shared.client, shared.resident
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
@IN_THE_MODULE_LOOP
async def test_no_resident_route_takes_a_staff_token(
    shared: Shared, method: str, path: str
) -> None:
    client, resident, headers = shared.client, shared.resident, shared.staff
    assert (await client.get("/api/v1/staff/me", headers=headers)).status_code == 200
    token = headers["Authorization"].removeprefix("Bearer ")
    answer = await _call(client, method, path, token)
    assert answer.status_code == 401, answer.text
    # And the resident's own data did not move.
    assert (await client.get("/api/v1/me/account", headers=resident.headers)).status_code == 200
