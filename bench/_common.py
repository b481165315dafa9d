"""What the PostgreSQL benches share: a scratch database and hsm-sim per run, the API on a free
loopback port, and a population of active cards."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import migrate
from cardsvc.cards.models import CONCESSION_CODES, Card, CardStatus, CardType
from cardsvc.residents.models import Resident
from hsm_sim.child import start_hsm_process


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


@dataclass(frozen=True)
class Scratch:
    database_url: str
    database_name: str  # PostgreSQL backends name it in their process title
    hsm_url: str
    workdir: Path


@contextmanager
def scratch(name: str) -> Iterator[Scratch]:
    """A migrated database of its own on the server of ``CARDSVC_BENCH_DATABASE_URL`` (default the
    local ``test`` server), a work directory, and an hsm-sim process with the development keys;
    the process is stopped and the database dropped afterwards."""
    server_url = os.environ.get(
        "CARDSVC_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )
    database_name = f"bench_{name}_{os.getpid()}"
    database_url = asyncio.run(create_database(server_url, database_name))
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    hsm_url, stop_hsm = start_hsm_process(workdir / "hsm")
    try:
        migrate.upgrade(database_url)
        yield Scratch(database_url, database_name, hsm_url, workdir)
    finally:
        stop_hsm()
        asyncio.run(drop_database(server_url, database_name))


@contextmanager
def running_api(env: dict[str, str], workers: int) -> Iterator[tuple[int, str]]:
    """The API under uvicorn on a free loopback port, served as ``cardsvc serve`` serves it (with
    TCP_NODELAY on every worker); yields its pid and base URL once /healthz answers, and stops it
    afterwards."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "cardsvc.app:create_app", "--factory",
         "--http", "cardsvc.server:NoDelayHttpProtocol", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        # Two workers importing and starting on a busy shared machine can take tens of seconds.
        deadline = time.monotonic() + 120
        while not _answers(base + "/healthz"):
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not answer /healthz within 120 s")
            time.sleep(0.1)
        yield server.pid, base
    finally:
        server.terminate()
        server.wait(timeout=20)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


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
            sex="M", phone="", address="", created_by="bench",
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
