"""SQL of the audit trail, plus the insert-if-absent helper other issuance tables use for their
single counter rows (both engines support ``INSERT ... ON CONFLICT DO NOTHING``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.audit.models import AuditEntry, AuditHead

GENESIS_HASH = "0" * 64


async def insert_ignore(session: AsyncSession, table: Any, values: Mapping[str, Any]) -> None:
    """Insert a row unless its key exists (works on PostgreSQL and SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        pg_stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
        await session.execute(pg_stmt)
    else:
        lite_stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
        await session.execute(lite_stmt)


async def lock_head(session: AsyncSession) -> AuditHead:
    stmt = select(AuditHead).where(AuditHead.id == 1).with_for_update()
    head = (await session.execute(stmt)).scalar_one_or_none()
    if head is None:
        await insert_ignore(session, AuditHead.__table__, {"id": 1, "seq": 0, "hash": GENESIS_HASH})
        head = (await session.execute(stmt)).scalar_one()
    return head


async def get_head(session: AsyncSession) -> AuditHead | None:
    return await session.get(AuditHead, 1)


async def add(session: AsyncSession, entry: AuditEntry) -> None:
    session.add(entry)
    await session.flush()


async def iterate(session: AsyncSession, batch: int = 1000) -> AsyncIterator[AuditEntry]:
    last = 0
    while True:
        stmt = select(AuditEntry).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch)
        rows = list((await session.execute(stmt)).scalars())
        if not rows:
            return
        for row in rows:
            yield row
        last = rows[-1].seq


async def list_entries(
    session: AsyncSession,
    *,
    entity: str | None = None,
    entity_id: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    stmt = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
    if entity is not None:
        stmt = stmt.where(AuditEntry.entity == entity)
    if entity_id is not None:
        stmt = stmt.where(AuditEntry.entity_id == entity_id)
    return list((await session.execute(stmt)).scalars())
