"""Database: one MetaData with a naming convention, async engines, and the unit of work.

Services receive an ``AsyncSession`` and only ``flush``; the request dependency or the job that
opened the session commits (``unit_of_work``). SQLite serializes writers with ``BEGIN IMMEDIATE``
so that read-modify-write sequences (balances, sequences) behave as they do under PostgreSQL row
locks.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# Packages whose ``models`` modules (or ``models`` packages) register tables on ``metadata``.
MODEL_PACKAGES = ("cardsvc", "terminals", "settlement")


# 64-bit surrogate keys; SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both engines (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = metadata
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


def import_all_models() -> None:
    """Import every ``models`` module so that ``metadata`` knows every table (Alembic, checks)."""
    for package_name in MODEL_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if info.name.rsplit(".", 1)[-1] == "models" or ".models." in info.name:
                importlib.import_module(info.name)


def create_engine(
    url: str, *, pool_size: int = 10, pre_ping: bool = False, ping_idle_seconds: float = 1.0
) -> AsyncEngine:
    """An engine for ``url``. PostgreSQL connections are pooled and recycled after 30 minutes.

    The pool is fixed at ``pool_size`` (no overflow). An overflow connection is opened for a burst
    and closed after it, and each new connection prepares every statement again: under load the
    server spent its CPU on connections instead of requests. A request now waits for a free one.

    ``pre_ping`` (a round trip before every checkout) is off by default: it costs a round trip on
    every request, and without it a connection the server dropped fails one statement, after
    which SQLAlchemy discards the whole pool; every money movement is idempotent, so the caller's
    retry is safe. A connection that sat idle for ``ping_idle_seconds`` or more is pinged
    anyway: after a database restart the pool holds only dead connections, and the first request
    must not be the one that finds out (a busy pool is never idle that long, so this costs
    nothing under load).

    Bound parameter values never appear in errors or logs (``hide_parameters``): a password
    typed into the username field must not reach the log of the statement that failed.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, poolclass=NullPool, hide_parameters=True)
        _serialize_sqlite_writers(engine.sync_engine)
        return engine
    engine = create_async_engine(
        url,
        # Named, so that an operator (and the day cut, when it waits) can tell our sessions.
        connect_args={"server_settings": {"application_name": "cardsvc"}},
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        hide_parameters=True,
    )
    if not pre_ping:
        _ping_when_idle(engine.sync_engine, ping_idle_seconds)
    return engine


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    @event.listens_for(engine.pool, "checkin")
    def _stamp(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.get("checked_in_at")
        if checked_in is None or time.monotonic() - checked_in < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError("pooled connection is dead") from exc


def _serialize_sqlite_writers(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, emit BEGIN, so we can make it IMMEDIATE below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A short read (read_sessions) takes no write lock: in WAL mode it neither waits for the
        # writer nor holds it back, and a task that holds a write transaction may still read.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


READ_ONLY = "cardsvc_read_only"
_read_factories: weakref.WeakKeyDictionary[Any, async_sessionmaker[AsyncSession]] = (
    weakref.WeakKeyDictionary()
)


def read_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for a short read, never written through (on SQLite: a deferred BEGIN)."""
    found = _read_factories.get(engine.sync_engine)
    if found is None:
        found = _read_factories[engine.sync_engine] = session_factory(
            engine.execution_options(**{READ_ONLY: True})
        )
    return found


@asynccontextmanager
async def unit_of_work(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session committed when the block succeeds and rolled back when it raises."""
    async with factory() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()
