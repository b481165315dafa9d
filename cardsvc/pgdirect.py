"""Hot statements run straight on the asyncpg connection of the session's transaction.

On PostgreSQL, running an already-prepared statement through an ``AsyncSession`` costs several
times the CPU of running it through asyncpg alone, and an online authorization runs about ten
statements (``bench/online_cpu.py`` shows the split per step). A :class:`Query`
is still written with SQLAlchemy, in a repository, against the models. It is compiled once per
dialect. On PostgreSQL its SQL and positional arguments go to asyncpg, inside the transaction the
session already holds. On other engines (SQLite) it goes through the session as usual.

Rows come back as plain positional rows on both engines, with bind parameters converted by the
column types (UTC datetimes, enums) but results as the driver returns them: callers convert enum
values themselves. Statements whose compilation needs per-execution work (Python-side column
defaults, expanding ``IN``) are refused when the query is built.

It also keeps a connection listening on notification channels (:func:`listening`): the worker
is woken by a commit of another process instead of waiting for its next interval.

This is the one module that touches asyncpg and SQLAlchemy's asyncpg adapter internals (pinned by
``uv.lock``; ``tests/cardsvc/test_pgdirect.py`` checks them on PostgreSQL).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql import ClauseElement, Executable

from cardsvc.logging import get_logger

log = get_logger(__name__)

Row = Sequence[Any]

# What asyncpg raises on a direct statement when the server is gone, restarting or refusing
# connections (SQLAlchemy wraps the same errors as OperationalError on its own path).
DISCONNECTED: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.InterfaceError,  # the connection is closed
)


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # positional order of the bind parameters
    constants: dict[str, Any]  # values fixed in the statement (literals SQLAlchemy bound)
    processors: dict[str, Callable[[Any], Any]]


def _compile(statement: ClauseElement, dialect: Dialect) -> _Compiled:
    compiled: Any = statement.compile(dialect=dialect)
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise ValueError("a direct query must set every column with a Python-side default itself")
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError("a direct query cannot use expanding or literal-execute parameters")
    names = tuple(compiled.positiontup or ())
    constants = {
        name: bind.effective_value
        for bind, name in compiled.bind_names.items()
        if not bind.required and bind.callable is None
    }
    return _Compiled(compiled.string, names, constants, dict(compiled._bind_processors))


class Query:
    """A statement built once per dialect (``build(dialect_name)``), executed with parameters."""

    def __init__(self, build: Callable[[str], Executable]) -> None:
        self._build = build
        self._statements: dict[str, Executable] = {}
        self._compiled: _Compiled | None = None

    def statement(self, dialect: str) -> Executable:
        built = self._statements.get(dialect)
        if built is None:
            built = self._statements[dialect] = self._build(dialect)
        return built

    async def rows(self, session: AsyncSession, params: Mapping[str, Any]) -> list[Row]:
        dialect = session.get_bind().dialect
        if dialect.name != "postgresql":
            connection = await session.connection()
            result = await connection.execute(self.statement(dialect.name), dict(params))
            return list(result) if result.returns_rows else []
        compiled = self._compiled
        if compiled is None:
            statement = self.statement(dialect.name)
            # Select, Insert, Update and text() are all both Executable and ClauseElement.
            assert isinstance(statement, ClauseElement)  # noqa: S101
            compiled = self._compiled = _compile(statement, dialect)
        args = []
        for name in compiled.names:
            value = params[name] if name in params else compiled.constants[name]
            processor = compiled.processors.get(name)
            args.append(value if processor is None or value is None else processor(value))
        driver = await _driver_connection(session)
        return list(await driver.fetch(compiled.sql, *args))

    async def first(self, session: AsyncSession, params: Mapping[str, Any]) -> Row | None:
        found = await self.rows(session, params)
        return found[0] if found else None

    async def scalar(self, session: AsyncSession, params: Mapping[str, Any]) -> Any:
        row = await self.first(session, params)
        return None if row is None else row[0]


@dataclass(frozen=True, slots=True)
class Guard:
    """A guarded write another statement goes on from only if it wrote a row: on PostgreSQL
    ``query`` (an ``UPDATE ... RETURNING``) runs as a CTE of that statement, so both commit or
    neither does; on other engines it runs just before, as a statement of its own. It lets a
    domain hand its write to another domain's statement without handing it its table."""

    query: Query
    params: Mapping[str, Any]


def statements_on_their_own(session: AsyncSession) -> None:
    """Let each direct statement of ``session`` be a transaction of its own until the session
    begins one itself (a statement through SQLAlchemy): on PostgreSQL no ``BEGIN`` and no
    ``COMMIT``, two round trips fewer per unit of work. Only for a unit of work whose statements
    are each safe to commit alone, in the order they run, whatever happens after (a crash between
    two of them must leave a state the code already handles); on SQLite the session's transaction
    runs them as usual."""
    session.info[_ALONE_KEY] = True


async def _driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under the session, with the session's transaction begun on it
    (unless the session runs its statements on their own and has begun none).

    SQLAlchemy's adapter begins its asyncpg transaction lazily, at the first statement it runs
    itself; a direct statement first must begin it the same way, or it would run outside the
    transaction (autocommitted) and the adapter would later open a nested one.
    """
    transaction = session.get_transaction()
    cached = session.info.get(_INFO_KEY)
    if cached is not None and transaction is not None and cached[0] is transaction:
        return cached[1]
    alone = session.info.get(_ALONE_KEY)
    # Still no transaction begun on the connection: this statement commits alone.
    if alone not in (None, True) and alone[0] is transaction and alone[1]._transaction is None:
        return alone[1]._connection
    connection = await session.connection()
    adapted: Any = (await connection.get_raw_connection()).dbapi_connection
    if adapted._transaction is None and alone is not None:
        session.info[_ALONE_KEY] = (session.get_transaction(), adapted)
        return adapted._connection
    if adapted._transaction is None:
        await adapted._start_transaction()
    # Valid for this session transaction only: after a commit or rollback the session may hold
    # another connection, and the adapter begins again.
    session.info[_INFO_KEY] = (session.get_transaction(), adapted._connection)
    return adapted._connection


_INFO_KEY = "pgdirect.driver"
_ALONE_KEY = "pgdirect.alone"


# After a lost listening connection (or a failed attempt), wait this long before listening again.
LISTEN_RETRY_SECONDS = 5.0


@asynccontextmanager
async def listening(
    engine: AsyncEngine,
    channels: Sequence[str],
    notified: Callable[[str], None],
    *,
    retry_seconds: float | None = None,
) -> AsyncIterator[None]:
    """While the block runs, ``notified(channel)`` is called for every notification on
    ``channels`` (PostgreSQL's LISTEN, on a connection of ``engine`` kept for it and opened again
    after it is lost, every ``retry_seconds``). The block starts once listening (or once the
    first attempt failed); then, and after every reconnection, every channel is notified once, so
    what was committed while nobody listened is not missed. Notifications are hints: the caller
    still polls."""
    retry = LISTEN_RETRY_SECONDS if retry_seconds is None else retry_seconds

    async def listen() -> tuple[AsyncConnection, asyncio.Event]:
        connection = await engine.connect()
        try:
            raw: Any = (await connection.get_raw_connection()).driver_connection
            lost = asyncio.Event()
            raw.add_termination_listener(lambda _conn: lost.set())
            for channel in channels:
                await raw.add_listener(channel, lambda _conn, _pid, name, _payload: notified(name))
        except BaseException:
            await connection.invalidate()
            raise
        for channel in channels:
            notified(channel)
        return connection, lost

    async def attempt() -> tuple[AsyncConnection, asyncio.Event] | None:
        try:
            return await listen()
        except Exception as exc:  # the database is down: polling goes on meanwhile
            log.warning("db.listen_failed", channels=list(channels), error=type(exc).__name__)
            return None

    async def keep(current: tuple[AsyncConnection, asyncio.Event] | None) -> None:
        while True:
            if current is not None:
                connection, lost = current
                try:
                    await lost.wait()
                    log.warning("db.listen_lost", channels=list(channels))
                finally:
                    # Never back into the pool: the connection still listens.
                    with suppress(Exception):
                        await connection.invalidate()
            await asyncio.sleep(retry)
            current = await attempt()

    task = asyncio.create_task(keep(await attempt()))
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
