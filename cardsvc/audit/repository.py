"""SQL of the audit trail."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.audit.models import AuditEntry, AuditHead
from cardsvc.sql import insert_ignore

GENESIS_MAC = "0" * 64


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """An entry as the sealer and the verifier read it."""

    id: int
    seq: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before: str | None
    after: str | None
    mac: str | None


_CONTENT = (
    AuditEntry.id,
    AuditEntry.seq,
    AuditEntry.at,
    AuditEntry.actor,
    AuditEntry.action,
    AuditEntry.entity,
    AuditEntry.entity_id,
    AuditEntry.before,
    AuditEntry.after,
    AuditEntry.mac,
)


async def add(session: AsyncSession, values: dict[str, Any]) -> None:
    """One entry, unsealed (no number, no MAC): an insert that locks nothing else."""
    await session.execute(insert(AuditEntry).values(**values))


async def lock_head(session: AsyncSession) -> AuditHead:
    """The head row, locked: one sealer at a time claims or stores a batch."""
    stmt = select(AuditHead).where(AuditHead.id == 1).with_for_update()
    head = (await session.execute(stmt)).scalar_one_or_none()
    if head is None:
        await insert_ignore(session, AuditHead.__table__, {"id": 1, "seq": 0, "mac": GENESIS_MAC})
        head = (await session.execute(stmt)).scalar_one()
    return head


async def get_head(session: AsyncSession) -> AuditHead | None:
    return await session.get(AuditHead, 1)


async def has_unsealed(session: AsyncSession) -> bool:
    stmt = select(AuditEntry.id).where(AuditEntry.mac.is_(None)).limit(1)
    return (await session.execute(stmt)).first() is not None


async def count_unsealed(session: AsyncSession) -> int:
    stmt = select(func.count()).select_from(AuditEntry).where(AuditEntry.mac.is_(None))
    return int((await session.execute(stmt)).scalar_one())


async def chain_after(session: AsyncSession, seq: int, limit: int) -> list[ChainEntry]:
    """Numbered entries after ``seq``, in chain order (sealed, then a claimed batch, if any)."""
    stmt = select(*_CONTENT).where(AuditEntry.seq > seq).order_by(AuditEntry.seq).limit(limit)
    return [ChainEntry(**row._mapping) for row in await session.execute(stmt)]


async def claim(session: AsyncSession, after_seq: int, limit: int) -> list[ChainEntry]:
    """Number the oldest unnumbered entries after ``after_seq``, in the order they were written;
    the caller holds the head lock."""
    stmt = select(AuditEntry.id).where(AuditEntry.seq.is_(None)).order_by(AuditEntry.id)
    ids = list((await session.execute(stmt.limit(limit))).scalars())
    if not ids:
        return []
    await session.execute(
        update(AuditEntry),
        [{"id": entry_id, "seq": after_seq + n} for n, entry_id in enumerate(ids, start=1)],
    )
    return await chain_after(session, after_seq, limit)


async def store_macs(session: AsyncSession, macs: Iterable[tuple[int, str]]) -> None:
    """The MACs of a claimed batch, by entry id."""
    await session.execute(
        update(AuditEntry), [{"id": entry_id, "mac": mac} for entry_id, mac in macs]
    )


async def list_entries(
    session: AsyncSession,
    *,
    entity: str | None = None,
    entity_id: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """The newest entries first (in the order they were written: the unsealed have no number)."""
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if entity is not None:
        stmt = stmt.where(AuditEntry.entity == entity)
    if entity_id is not None:
        stmt = stmt.where(AuditEntry.entity_id == entity_id)
    return list((await session.execute(stmt)).scalars())
