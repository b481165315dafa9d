"""Alembic environment: async engines, every model imported, both PostgreSQL and SQLite.

The URL is taken from ``-x url=...``, then ``CARDSVC_DATABASE_URL``, then the settings default.
SQLite needs batch mode for ALTER TABLE.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from sqlalchemy.engine import Connection

from cardsvc.clearing.partitions import is_partition
from cardsvc.db import UTCDateTime, create_engine, import_all_models, metadata

config = context.config
import_all_models()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if url:
        return url
    from cardsvc.settings import Settings

    settings = Settings(mode="development")
    if settings.is_sqlite:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    return settings.database_url


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Render our UTC column type as the plain timezone-aware DateTime it stores."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _include_name(name: str | None, type_: str, _parent: Any) -> bool:
    """Daily partitions are made by the day cut, not declared as models: compare their parents."""
    return not (type_ == "table" and name is not None and is_partition(name))


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
        render_item=_render_item,
        include_name=_include_name,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # A migration must not wait forever behind a busy table.
            connection.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
