"""SQL of the audit trail."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.audit.models import AuditEntry, AuditHead
from cardsvc.sql import insert_ignore

GENESIS_HASH = "0" * 64


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
