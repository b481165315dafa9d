"""Which backing service an exception says is down: the one classification of outages, for the
API (503 ``DependencyUnavailable``) and the command line (``error: DependencyUnavailable``)."""

from __future__ import annotations

import sqlite3

import sqlalchemy.exc

from cardsvc.cache import CACHE_DOWN
from cardsvc.hsm import HsmUnavailable
from cardsvc.pgdirect import DISCONNECTED

_SQLITE_OUTAGES = (
    "unable to open database",
    "database is locked",
    "disk i/o error",
    "database or disk is full",
)


def outage(exc: BaseException) -> str | None:
    """Which backing service an exception says is down, or None when it is not an outage."""
    if isinstance(exc, HsmUnavailable):
        return "HSM"
    if isinstance(exc, CACHE_DOWN):
        return "cache"
    if isinstance(exc, sqlalchemy.exc.OperationalError) and isinstance(exc.orig, sqlite3.Error):
        # SQLite raises OperationalError for a missing table too: only these are outages.
        message = str(exc.orig).lower()
        return "database" if any(m in message for m in _SQLITE_OUTAGES) else None
    database_down = (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        sqlalchemy.exc.TimeoutError,  # no pooled connection came free in time
        ConnectionError,  # refused or reset while connecting
        *DISCONNECTED,
    )
    if isinstance(exc, database_down):
        return "database"
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return "database"
    if exc.__cause__ is not None and exc.__cause__ is not exc:
        return outage(exc.__cause__)
    return None
