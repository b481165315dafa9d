"""Outages answer 503 with the error body (never 500), answered by the app itself (nothing raised
on to the server, which would log a crash with its traceback), and the first request after a
database restart succeeds."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from cardsvc.app import create_app
from cardsvc.cache import RedisCache
from cardsvc.db import create_engine, session_factory
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from tests.conftest import _pg_admin
from tests.factories import build_registry, create_staff
from tests.terminals.helpers import host


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _kill_connections(url: str) -> None:
    """What a database restart does to a pool: every connection it holds is dead."""
    database = make_url(url).database  # this test session's own database
    await _pg_admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
    await asyncio.sleep(0.1)


@asynccontextmanager
async def _api(resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(resources.settings, resources)
    # An exception the app raises on to its server fails the test: an outage is an answer.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


def _assert_unavailable(response: httpx.Response, dependency: str) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": "DependencyUnavailable",
        "detail": f"the {dependency} is unavailable: retry later",
    }
    assert response.headers["retry-after"] == "2"


async def test_database_down_answers_503(resources: Resources, tmp_path: Path) -> None:
    if resources.engine.dialect.name == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/missing/dir/cardsvc.db"
    else:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/nothing"
    engine = create_engine(url)
    down = dataclasses.replace(resources, engine=engine, sessions=session_factory(engine))
    threads_before = set(threading.enumerate())
    async with _api(down) as api:
        response = await api.post("/api/v1/staff/login", json={"username": "a", "password": "b"})
        ready = await api.get("/readyz")
    await engine.dispose()
    # aiosqlite stops the thread of a connection that failed to open without waiting for it; on a
    # busy machine the thread would otherwise report to this test's loop after it closed.
    for thread in set(threading.enumerate()) - threads_before:
        if "_connection_worker_thread" in thread.name:
            await asyncio.to_thread(thread.join, 5)
    _assert_unavailable(response, "database")
    assert ready.status_code == 503


async def test_no_free_connection_in_the_pool_answers_503(resources: Resources) -> None:
    """A request that waits out the pool (every connection busy) is an outage: the pool's
    TimeoutError is answered 503 by the app, never raised on to the server."""
    engine = create_async_engine(
        resources.settings.database_url,
        poolclass=AsyncAdaptedQueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.1,
    )
    busy = dataclasses.replace(resources, engine=engine, sessions=session_factory(engine))
    async with _api(busy) as api:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            response = await api.post(
                "/api/v1/staff/login", json={"username": "a", "password": "b"}
            )
        after = await api.post("/api/v1/staff/login", json={"username": "a", "password": "b"})
    await engine.dispose()
    _assert_unavailable(response, "database")
    assert after.status_code == 401  # with the connection back, the same request is answered


async def test_without_the_cache_sign_in_and_login_go_on(resources: Resources) -> None:
    """The cache is never the only guard: sign-in nonces are in the database, and logins keep
    their per-account lockout (only the per-address count waits for the cache)."""
    world = await build_registry(resources, buses=1, taxis=0)
    await create_staff(resources, "clerk", [Role.counter_operator])
    gone = RedisCache.from_url(f"redis://127.0.0.1:{_closed_port()}/0")
    async with _api(dataclasses.replace(resources, cache=gone)) as api:
        await host(api, world.bus_terminals[0]).sign_in()
        login = {"username": "clerk", "password": "correct horse battery"}
        assert (await api.post("/api/v1/staff/login", json=login)).status_code == 200
        wrong = {"username": "clerk", "password": "wrong password"}
        assert (await api.post("/api/v1/staff/login", json=wrong)).status_code == 401
    await gone.close()


@pytest.mark.postgres
async def test_the_first_request_after_a_database_restart_succeeds(
    resources: Resources,
) -> None:
    engine = create_engine(resources.settings.database_url, pool_size=2, ping_idle_seconds=0.05)
    live = dataclasses.replace(resources, engine=engine, sessions=session_factory(engine))
    await create_staff(live, "clerk", [Role.counter_operator])
    login = {"username": "clerk", "password": "correct horse battery"}
    async with _api(live) as api:
        assert (await api.post("/api/v1/staff/login", json=login)).status_code == 200
        await _kill_connections(resources.settings.database_url)
        response = await api.post("/api/v1/staff/login", json=login)
    await engine.dispose()
    assert response.status_code == 200, response.text


@pytest.mark.postgres
async def test_a_dead_connection_in_use_is_an_outage_not_a_bug(resources: Resources) -> None:
    engine = create_engine(resources.settings.database_url, pool_size=1, ping_idle_seconds=3600)
    live = dataclasses.replace(resources, engine=engine, sessions=session_factory(engine))
    async with _api(live) as api:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        await _kill_connections(resources.settings.database_url)
        response = await api.post("/api/v1/staff/login", json={"username": "a", "password": "b"})
        after = await api.post("/api/v1/staff/login", json={"username": "a", "password": "b"})
    await engine.dispose()
    _assert_unavailable(response, "database")
    assert after.status_code == 401  # the pool is fresh again
