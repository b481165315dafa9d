"""Fixtures of the self-service tests: residents with active cards, and the resident's way in (a
code from the counter's operator, activation, login)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from cardsvc.cards.models import Card
from cardsvc.resources import Resources
from tests.factories import make_card

PASSWORD = "a long resident passphrase"


@dataclass
class Resident:
    """A resident with an active card and online access activated."""

    card: Card
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def issue_code(client: httpx.AsyncClient, operator: dict[str, str], card: Card) -> str:
    answer = await client.post(
        "/api/v1/self-service/activation-codes", json={"card_no": card.card_no}, headers=operator
    )
    assert answer.status_code == 201, answer.text
    code: str = answer.json()["activation_code"]
    return code


async def activate(
    client: httpx.AsyncClient, card: Card, code: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(
        "/api/v1/self-service/activate",
        json={"card_no": card.card_no, "activation_code": code, "password": password},
    )


async def login(client: httpx.AsyncClient, card: Card, password: str = PASSWORD) -> httpx.Response:
    return await client.post(
        "/api/v1/self-service/login", json={"card_no": card.card_no, "password": password}
    )


async def online_resident(
    client: httpx.AsyncClient, operator: dict[str, str], card: Card, password: str = PASSWORD
) -> Resident:
    answer = await activate(client, card, await issue_code(client, operator, card), password)
    assert answer.status_code == 200, answer.text
    return Resident(card, password, answer.json()["access_token"])


@pytest.fixture
async def card(resources: Resources) -> Card:
    return await make_card(resources, 21, account=12_345, pin=None)


@pytest.fixture
async def other_card(resources: Resources) -> Card:
    return await make_card(resources, 22, account=54_321, pin=None)


@pytest.fixture
async def resident(client: httpx.AsyncClient, operator: dict[str, str], card: Card) -> Resident:
    return await online_resident(client, operator, card)


@pytest.fixture
async def other(client: httpx.AsyncClient, operator: dict[str, str], other_card: Card) -> Resident:
    return await online_resident(client, operator, other_card, "another resident's passphrase")
