"""Shared fixtures: the two storage backends, resources, the API client, staff of each role and
the terminals' world (built by :mod:`tests.factories`).

Every test that asks for ``resources`` (or ``database_url``) runs twice when
``CARDSVC_TEST_DATABASE_URL`` and ``CARDSVC_TEST_REDIS_URL`` are set: once on SQLite with the
in-process cache, once on PostgreSQL with Redis. Schemas come from the migrations, never from
``create_all``. With ``CARDSVC_REQUIRE_SERVICES=1`` (CI) a missing service fails the run.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from hypothesis import settings as hypothesis_settings
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cardsvc import clock, migrate
from cardsvc.app import create_app
from cardsvc.bills.endpoints import close_biller_http
from cardsvc.cache import Cache, MemoryCache, RedisCache
from cardsvc.db import create_engine, import_all_models, metadata, session_factory
from cardsvc.hsm import HsmClient
from cardsvc.hsm.connect import connect_hsm
from cardsvc.resources import Resources
from cardsvc.settings import Mode, Settings, get_settings
from cardsvc.staff import auth as staff_auth
from cardsvc.staff.auth import Role
from terminals.devices.billersim.child import start_biller_process
from tests.billersim import SimControl, data_set
from tests.factories import World, build_registry, staff_headers
from tests.terminals.helpers import free_port

# CI replays the same examples on every run so that a landing is decided by the code, not by the
# draw; local runs explore new examples (and keep failures in .hypothesis/).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    hypothesis_settings.load_profile("ci")

PG_URL = os.environ.get("CARDSVC_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("CARDSVC_TEST_REDIS_URL", "")
REQUIRE_SERVICES = os.environ.get("CARDSVC_REQUIRE_SERVICES") == "1"

BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
CACHES = ["memory"] + (["redis"] if REDIS_URL else [])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``postgres`` (row locks, real concurrency) have no SQLite variant."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        params = getattr(item, "callspec", None)
        on_sqlite = params is not None and params.params.get("database_url") == "sqlite"
        (drop if on_sqlite and item.get_closest_marker("postgres") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_configure(config: pytest.Config) -> None:
    if REQUIRE_SERVICES and not (PG_URL and REDIS_URL):
        raise pytest.UsageError(
            "CARDSVC_REQUIRE_SERVICES=1 but CARDSVC_TEST_DATABASE_URL or "
            "CARDSVC_TEST_REDIS_URL is missing"
        )


@pytest.fixture(autouse=True)
def _one_at_a_time_on_the_reader(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests marked ``pcsc`` share the one vpcd reader: across pytest-xdist's workers (``make
    test`` runs two) and across concurrent test runs they take turns, under a file lock."""
    if request.node.get_closest_marker("pcsc") is None:
        yield
        return
    with (Path(tempfile.gettempdir()) / "cardsvc-vpcd.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# The service hashes staff passwords with argon2 at its production cost (64 MiB, three passes, a
# good fraction of a CPU second each); the suite creates and logs in a few hundred accounts. In
# this process they are hashed with the least cost argon2 allows: the same code, algorithm and
# encoded form, and a hash carries its own cost, so verifying is the same path. A test about
# the production hash itself says ``@pytest.mark.production_hash``; processes the tests start
# (``cardsvc serve``, the commands) always hash at the production cost.
TEST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(autouse=True)
def _test_cost_password_hashes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if request.node.get_closest_marker("production_hash") is None:
        monkeypatch.setattr(staff_auth, "_hasher", TEST_HASHER)


@pytest.fixture(autouse=True)
def _system_clock() -> Iterator[None]:
    """Every test starts and ends on the system time, whatever it set (``cardsvc.clock``)."""
    clock.reset()
    yield
    clock.reset()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "template.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


async def _pg_admin(sql: str) -> None:
    base = make_url(PG_URL)
    conn = await asyncpg.connect(
        host=base.host,
        port=base.port or 5432,
        user=base.username,
        password=base.password,
        database=base.database or "postgres",
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, built by the migrations."""
    name = f"cardsvc_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _table_names() -> list[str]:
    import_all_models()
    return [t.name for t in metadata.sorted_tables]


@pytest.fixture(scope="session")
def _sqlite_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("database") / "cardsvc.db"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of the test's own: on SQLite a fresh copy of the template, at one path per
    worker, so that the worker's one engine for it (``engine``) keeps its compiled statements
    from test to test. The copy replaces the file (and drops its write-ahead log), so a
    connection a test left open still sees that test's file."""
    if request.param == "sqlite":
        path: Path = request.getfixturevalue("_sqlite_path")
        for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
        fresh = path.with_name(path.name + ".new")
        shutil.copyfile(request.getfixturevalue("sqlite_template"), fresh)
        os.replace(fresh, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_database")
    yield url


async def _empty_engine(database_url: str) -> AsyncEngine:
    # A pool large enough for the concurrency tests (many sessions at once).
    engine = create_engine(database_url, pool_size=12)
    if engine.dialect.name == "postgresql":
        tables = _table_names()
        if tables:
            async with engine.begin() as conn:
                await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    return engine


# SQLAlchemy caches a statement's compiled form per engine; compiling them again for each test
# was a good part of the CPU of the tests' queries. On SQLite each worker therefore has one
# engine for its one database path (``database_url``); it holds no connection between tests.
_SQLITE_ENGINES: dict[str, AsyncEngine] = {}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    if database_url.startswith("sqlite"):
        engine = _SQLITE_ENGINES.get(database_url)
        if engine is None:
            engine = _SQLITE_ENGINES[database_url] = await _empty_engine(database_url)
    else:
        engine = await _empty_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
async def session(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session for service-level tests; the test commits what it wants kept."""
    async with sessions() as session:
        yield session


async def _open_cache(kind: str) -> Cache:
    if kind == "redis":
        cache = RedisCache.from_url(REDIS_URL, prefix=f"test:{uuid.uuid4().hex}:")
        await cache.ping()
        return cache
    return MemoryCache()


@pytest.fixture
async def cache(engine: AsyncEngine) -> AsyncIterator[Cache]:
    """The cache paired with the database backend: memory with SQLite, Redis with PostgreSQL."""
    kind = "redis" if engine.dialect.name == "postgresql" and REDIS_URL else "memory"
    cache = await _open_cache(kind)
    yield cache
    await cache.close()


@pytest.fixture
async def hsm() -> AsyncIterator[HsmClient]:
    """The in-process HSM with the development key set (tests/hsm_sim tests the TCP one)."""
    client = await connect_hsm("local://dev")
    yield client
    await client.close()


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    """Development settings; ``@pytest.mark.settings(name=value, ...)`` overrides some (the
    object is frozen, as in a running process)."""
    marker = request.node.get_closest_marker("settings")
    return Settings(
        mode=Mode.development,
        var_dir=tmp_path / "var",
        database_url=database_url,
        hsm_url="local://dev",
        **(marker.kwargs if marker else {}),
    )


@pytest.fixture
def resources(
    settings: Settings,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    cache: Cache,
    hsm: HsmClient,
) -> Resources:
    return Resources(settings=settings, engine=engine, sessions=sessions, cache=cache, hsm=hsm)


# FastAPI builds an app's routes (each one's dependency graph) on the app's first request, for
# that app alone: most of the cost of a test that sends a few requests. The tests' apps are
# therefore made once per worker for each set of settings (their own paths aside: the app reads
# the database and the directories through ``app.state.resources``, set for each test). A test
# that runs the app's lifespan builds its own with ``create_app``.
_APPS: dict[str, FastAPI] = {}
_APP_STATE: dict[int, set[str]] = {}


def shared_app(resources: Resources) -> FastAPI:
    key = resources.settings.model_dump_json(exclude={"var_dir", "database_url"})
    app = _APPS.get(key)
    if app is None:
        app = _APPS[key] = create_app(resources.settings, resources)
        _APP_STATE[id(app)] = set(vars(app.state)["_state"])
    app.state.resources = resources
    return app


@pytest.fixture(scope="module", params=BACKENDS)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """``database_url`` for a module-scoped world (``module_resources``)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("module") / "cardsvc.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@asynccontextmanager
async def module_resources(url: str, directory: Path) -> AsyncIterator[Resources]:
    """What ``resources`` gives a test, on ``module_database_url``, for a module-scoped fixture:
    for tests that share one world built once (each test only reads it, or is refused before
    anything is written)."""
    engine = await _empty_engine(url)
    cache = await _open_cache(
        "redis" if engine.dialect.name == "postgresql" and REDIS_URL else "memory"
    )
    hsm = await connect_hsm("local://dev")
    settings = Settings(
        mode=Mode.development, var_dir=directory / "var", database_url=url, hsm_url="local://dev"
    )
    try:
        yield Resources(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            cache=cache,
            hsm=hsm,
        )
    finally:
        await hsm.close()
        await cache.close()
        await engine.dispose()


@pytest.fixture
async def client(resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    app = shared_app(resources)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
    # What the app's shutdown does, and then the app as it was made: what a test's requests
    # opened (the billers' HTTP client) belongs to that test's event loop.
    await close_biller_http(app.state)
    for name in set(vars(app.state)["_state"]) - _APP_STATE.get(id(app), set()):
        delattr(app.state, name)


@pytest.fixture
async def operator(client: httpx.AsyncClient) -> dict[str, str]:
    return await staff_headers(client, "operator", Role.counter_operator)


@pytest.fixture
async def auditor(client: httpx.AsyncClient) -> dict[str, str]:
    return await staff_headers(client, "auditor", Role.auditor)


@pytest.fixture
async def supervisor(client: httpx.AsyncClient) -> dict[str, str]:
    return await staff_headers(client, "supervisor", Role.supervisor)


@pytest.fixture
async def world(resources: Resources) -> World:
    """The terminals' world: a bus and a taxi operator with their terminals and fares."""
    return await build_registry(resources)


@pytest.fixture
def cli_env(
    settings: Settings, resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The environment of a staff shell running ``cardsvc`` commands; ``resources`` first so
    PostgreSQL starts empty."""
    monkeypatch.setenv("CARDSVC_MODE", "development")
    monkeypatch.setenv("CARDSVC_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CARDSVC_HSM_URL", "local://dev")
    monkeypatch.setenv("CARDSVC_VAR_DIR", str(settings.var_dir))
    monkeypatch.delenv("CARDSVC_REDIS_URL", raising=False)
    monkeypatch.delenv("CARDSVC_STAFF_PASSWORD", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# The simulated biller: one ``biller-sim`` process for the session, reset per test (the bills
# channel's tests in cardsvc, terminals and settlement, and the simulator's own).
@pytest.fixture(scope="session")
def biller_sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, stop = start_biller_process(Path(tmp_path_factory.mktemp("biller-sim")), data_set())
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def sim(biller_sim_url: str) -> Iterator[SimControl]:
    control = SimControl(biller_sim_url)
    control.reset()
    yield control
    control.reset()


@pytest.fixture(scope="session")
def callback_port() -> int:
    """The port the tests' API listens on for the simulator's callbacks (one per process)."""
    return free_port()


@pytest.fixture(scope="session")
def paying_sim_url(tmp_path_factory: pytest.TempPathFactory, callback_port: int) -> Iterator[str]:
    """A simulator for the payment tests: it calls back the API on ``callback_port``, and it
    accepts timestamps weeks from its clock, because those tests move the host's clock on to
    reach the 15-minute and 24-hour limits and the 30 days of a hold."""
    url, stop = start_biller_process(
        Path(tmp_path_factory.mktemp("biller-sim-pay")),
        data_set(f"http://127.0.0.1:{callback_port}/api/v1/bills/callbacks"),
        max_skew=40 * 86400,
    )
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def paying_sim(paying_sim_url: str) -> Iterator[SimControl]:
    control = SimControl(paying_sim_url)
    control.reset()
    yield control
    control.reset()
