"""Nothing personal leaves through the logs, the audit trail or the cache: a planted password and
activation code (and the card number, in the cache) are looked for everywhere."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from cardsvc.audit.models import AuditEntry
from cardsvc.cache import MemoryCache
from cardsvc.cards.models import Card
from cardsvc.logging import configure_logging
from cardsvc.resources import Resources
from tests.cardsvc.selfservice.conftest import activate, issue_code, login

PLANTED = "Plantedresidentpassword"
NEW_PLANTED = "Plantednewresidentpassword"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    client_log = logging.getLogger("httpx")  # the test's own client, not the service
    client_log.setLevel(logging.WARNING)
    yield stream
    client_log.setLevel(logging.NOTSET)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.NOTSET)
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_no_password_or_code_is_logged_audited_or_cached(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    card: Card,
    captured: io.StringIO,
) -> None:
    code = await issue_code(client, operator, card)
    assert (await activate(client, card, "ZZZZ-ZZZZ-ZZZZ", PLANTED)).status_code == 401
    activated = await activate(client, card, code, PLANTED)
    assert activated.status_code == 200
    assert (await login(client, card, PLANTED + "x")).status_code == 401
    token = (await login(client, card, PLANTED)).json()["access_token"]
    changed = await client.post(
        "/api/v1/me/password",
        json={"old_password": PLANTED, "new_password": NEW_PLANTED},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert changed.status_code == 200

    logs = captured.getvalue()
    assert logs  # the statements were logged
    async with resources.sessions() as s:
        trail = " ".join(
            f"{e.action} {e.before} {e.after}"
            for e in (await s.execute(select(AuditEntry))).scalars()
        )
    assert "selfservice.activate" in trail
    assert "selfservice.code_issue" in trail
    for secret in (PLANTED, NEW_PLANTED, code, code.replace("-", "")):
        assert secret not in logs
        assert secret not in trail
    assert card.card_no not in trail
    if isinstance(resources.cache, MemoryCache):
        keys = " ".join(resources.cache._values)
        assert "resident-failures" in keys
        assert card.card_no not in keys
        assert "127.0.0.1" not in keys
