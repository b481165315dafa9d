"""Issuance fixtures: staff headers for each role."""

from __future__ import annotations

import httpx
import pytest

from cardsvc.staff.auth import Role
from tests.issuance.helpers import staff_headers


@pytest.fixture
async def operator(client: httpx.AsyncClient) -> dict[str, str]:
    return await staff_headers(client, "operator", Role.counter_operator)


@pytest.fixture
async def auditor(client: httpx.AsyncClient) -> dict[str, str]:
    return await staff_headers(client, "auditor", Role.auditor)


@pytest.fixture
async def supervisor(client: httpx.AsyncClient) -> dict[str, str]:
    return await staff_headers(client, "supervisor", Role.supervisor)


from tests.conftest_pcsc import pcscd  # noqa: E402

__all__ = ["auditor", "operator", "pcscd", "supervisor"]
