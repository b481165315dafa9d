"""Process resources: engine, session factory, cache and HSM client, built once and closed once.

The API lifespan, CLI commands and jobs all build them through :func:`open_resources`, so a
command and a request see the same wiring; the worker, whose jobs touch no key, through
:func:`open_storage` (it needs no HSM to start). Nothing is built at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cardsvc.cache import Cache, connect_cache
from cardsvc.db import create_engine, session_factory
from cardsvc.hsm import HsmClient
from cardsvc.hsm.connect import open_hsm, open_hsm_on_first_use
from cardsvc.settings import Settings


@dataclass(frozen=True, slots=True)
class Storage:
    """What every process needs: the database and the cache."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    cache: Cache


@dataclass(frozen=True, slots=True)
class Resources(Storage):
    """Storage and the HSM: what the API and the commands that touch keys need."""

    hsm: HsmClient


@asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    async with AsyncExitStack() as stack:
        if settings.is_sqlite:
            settings.var_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            settings.database_url,
            pool_size=settings.database_pool_size,
            pre_ping=settings.database_pre_ping,
            ping_idle_seconds=settings.database_ping_idle_seconds,
        )
        stack.push_async_callback(engine.dispose)
        redis_password = settings.redis_password
        cache = connect_cache(
            settings.redis_url,
            password=redis_password.get_secret_value() if redis_password else None,
        )
        stack.push_async_callback(cache.close)
        yield Storage(settings, engine, session_factory(engine), cache)


@asynccontextmanager
async def open_resources(settings: Settings, *, hsm_now: bool = False) -> AsyncIterator[Resources]:
    """Storage and the HSM. The HSM is reached (in development: started) when it is first asked
    something, so a command that touches no key starts none; the API asks for it at once
    (``hsm_now``), so that a missing HSM stops it at start."""
    connect = open_hsm if hsm_now else open_hsm_on_first_use
    async with open_storage(settings) as storage, connect(settings) as hsm:
        yield Resources(storage.settings, storage.engine, storage.sessions, storage.cache, hsm)
