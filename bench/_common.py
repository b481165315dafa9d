"""What the PostgreSQL benches share: a scratch database and hsm-sim per run, the API on a free
loopback port, and a population of active cards."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from _rawhttp import RawConnection
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import migrate
from cardsvc.cards.models import CONCESSION_CODES, Card, CardStatus, CardType
from cardsvc.residents.models import Resident
from hsm_sim.child import start_hsm_process
from terminals.devices.host_client import HostClient, encode_body


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


@dataclass
class Slot:
    """One terminal's connection: its signing state (None for the unsigned floor) and socket."""

    host: HostClient | None
    conn: RawConnection


# A job sends one or more requests in turn and returns (kind, answer time) of each, or None when
# a request got no proper answer.
Job = Callable[[Slot], Awaitable[list[tuple[str, float]] | None]]


class OnlineJobs:
    """The online benches' schedule of signed jobs on random cards: 4 in 5 a purchase (one
    request), 1 in 5 a pre-authorization followed at once by its completion (the pump's next
    request, for half the amount plus a fen). Each terminal's serials count up from
    ``serial_base``; with ``pin`` every purchase and pre-authorization carries the holder's PIN
    block under the terminal's session PIN key. The response codes are tallied in ``codes``."""

    def __init__(self, cards: list[str], terminals: list[str], *, serial_base: int = 0,
                 pin: str | None = None) -> None:  # fmt: skip
        self.cards = cards
        self.pin = pin
        self.rng = random.Random(8)
        self.serials = dict.fromkeys(terminals, serial_base)
        self.codes: dict[str, int] = {}

    def tally(self, code: str) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1

    @property
    def sent(self) -> int:
        return sum(self.codes.values())

    @staticmethod
    async def post(slot: Slot, path: str, payload: dict[str, object]) -> tuple[int, Any]:
        assert slot.host is not None  # noqa: S101
        body = encode_body(payload)
        headers = slot.host.signed_headers("POST", path, body)
        headers["Content-Type"] = "application/json"
        return await slot.conn.request("POST", path, headers, body)

    def make_job(self, i: int) -> tuple[Job, int]:
        """The i-th job of the schedule and the number of requests (slots) it takes."""
        asn = self.rng.choice(self.cards)
        kind = "preauth" if i % 5 == 0 else "purchase"
        amount = self.rng.randrange(100, 5_000)

        async def job(slot: Slot) -> list[tuple[str, float]] | None:
            assert slot.host is not None  # noqa: S101
            terminal_no = slot.host.terminal_no
            self.serials[terminal_no] += 1
            serial = self.serials[terminal_no]
            payload: dict[str, object] = {"terminal_serial": serial, "asn": asn, "amount": amount}
            if self.pin is not None:  # the PIN pad encrypts as the holder types: request time
                payload["pin_block"] = slot.host.pin_block(self.pin, asn)
            status, body = await self.post(slot, f"/api/v1/online/{kind}", payload)
            answers = [(kind, time.perf_counter())]
            if status != 200:
                self.tally(str(status))
                return None
            self.tally(body["response_code"])
            if kind == "preauth" and body["approved"]:
                self.serials[terminal_no] += 1
                status, done = await self.post(
                    slot,
                    "/api/v1/online/completion",
                    {"terminal_serial": self.serials[terminal_no], "original_serial": serial,
                     "amount": amount // 2 + 1},
                )  # fmt: skip
                answers.append(("completion", time.perf_counter()))
                self.tally(f"completion {status if status != 200 else done['response_code']}")
                return answers if status == 200 else None
            return answers  # an answer, approved or declined (the codes are tallied)

        return job, 2 if kind == "preauth" else 1
