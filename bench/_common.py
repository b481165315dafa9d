"""What the PostgreSQL benches share: a scratch database per run, a free loopback port, and a
population of active cards."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime

import asyncpg
import httpx
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.cards.models import CONCESSION_CODES, Card, CardStatus, CardType
from cardsvc.residents.models import Resident


async def admin_sql(url: str, sql: str) -> None:
    """One statement on the server of ``url``, outside a transaction (CREATE/DROP DATABASE)."""
    u = make_url(url)
    conn = await asyncpg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password, database=u.database
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(url: str, name: str) -> str:
    """Create database ``name`` on the server of ``url``; returns the new database's URL."""
    await admin_sql(url, f'CREATE DATABASE "{name}"')
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def drop_database(url: str, name: str) -> None:
    """Drop database ``name`` on the server of ``url``, closing its leftover connections."""
    await admin_sql(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_api(env: dict[str, str], workers: int) -> tuple[subprocess.Popen[bytes], str]:
    """The API under uvicorn on a free loopback port, served as ``cardsvc serve`` serves it (with
    TCP_NODELAY on every worker); returns the process and its base URL once /healthz answers."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "cardsvc.app:create_app", "--factory",
         "--http", "cardsvc.server:NoDelayHttpProtocol", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.terminate()
    raise RuntimeError("the API did not answer /healthz within 30 s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def add_active_cards(
    session: AsyncSession, card_numbers: Sequence[str], *, expires_on: date | None = None
) -> list[int]:
    """One resident and one active standard card per number, written directly (the counter
    flow is not what these benches measure); returns the residents' ids in order."""
    residents = [
        Resident(
            id_index=uuid.uuid4().hex * 2, id_cipher=b"b", id_masked="x", name_cipher=b"b", name_masked="x",
            sex="M", birth_date=date(1990, 1, 1), phone="", address="", created_by="bench",
        )
        for _ in card_numbers
    ]  # fmt: skip
    session.add_all(residents)
    await session.flush()
    session.add_all(
        Card(
            card_no=no, asn=no, resident_id=r.id, card_type=CardType.standard,
            concession_code=CONCESSION_CODES[CardType.standard], status=CardStatus.active,
            key_version=1, issued_at=datetime.now(UTC), expires_on=expires_on,
        )
        for no, r in zip(card_numbers, residents, strict=True)
    )  # fmt: skip
    return [r.id for r in residents]
