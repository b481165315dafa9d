"""Test helpers for issuance: staff accounts and their bearer tokens, valid resident IDs."""

from __future__ import annotations

from collections.abc import Iterable

import httpx

from cardsvc.db import unit_of_work
from cardsvc.residents.idnumber import check_char
from cardsvc.resources import Resources
from cardsvc.staff import service as staff_service
from cardsvc.staff.auth import Role

PASSWORD = "correct horse battery"


def _resources(client: httpx.AsyncClient) -> Resources:
    app = getattr(client._transport, "app")  # noqa: B009 - httpx.ASGITransport keeps the app
    resources: Resources = app.state.resources
    return resources


async def create_staff(
    resources: Resources, username: str, roles: Iterable[Role], password: str = PASSWORD
) -> None:
    async with unit_of_work(resources.sessions) as session:
        await staff_service.create_staff(
            session, username=username, password=password, roles=roles, actor="test"
        )


async def staff_token(client: httpx.AsyncClient, username: str, roles: Iterable[Role]) -> str:
    """Create a staff user directly through the service, then log in over the API."""
    await create_staff(_resources(client), username, roles)
    response = await client.post(
        "/api/v1/staff/login", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def staff_headers(client: httpx.AsyncClient, username: str, *roles: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {await staff_token(client, username, roles)}"}


def resident_id(region: str = "321102", birth: str = "19900307", order: str = "123") -> str:
    """A valid GB 11643 ID for the given parts (check digit computed)."""
    first17 = region + birth + order
    return first17 + check_char(first17)
