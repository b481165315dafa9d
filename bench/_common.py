"""What the PostgreSQL benches share: a scratch database per run, and a free loopback port."""

from __future__ import annotations

import socket

import asyncpg
from sqlalchemy import make_url


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
