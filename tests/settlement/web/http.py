"""Signing in to the finance pages over the in-process HTTP client (no browser)."""

from __future__ import annotations

import re

import httpx

from cardsvc.db import unit_of_work
from cardsvc.resources import Resources
from cardsvc.staff import service as staff
from cardsvc.staff.auth import Role

PASSWORD = "finance over http"


async def sign_in(
    client: httpx.AsyncClient, resources: Resources, username: str, role: Role = Role.finance
) -> str:
    """Create the account, sign in (the client keeps the cookie); the session's CSRF token."""
    async with unit_of_work(resources.sessions) as session:
        await staff.create_staff(
            session, username=username, password=PASSWORD, roles=[role], actor="test"
        )
    form = await client.get("/finance/login")
    answer = await client.post(
        "/finance/login",
        data={"username": username, "password": PASSWORD, "csrf": csrf_of(form.text)},
    )
    assert answer.status_code == 303, answer.text
    return csrf_of((await client.get("/finance/days")).text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)
