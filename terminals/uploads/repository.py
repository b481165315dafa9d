"""SQL of offline uploads: bulk statements only (one round trip per step, never per record)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.cards.models import Card
from terminals.uploads.models import (
    CLAIMING,
    BreakItem,
    BreakKind,
    BreakStatus,
    OfflineRecord,
    UploadBatch,
)


@dataclass(frozen=True, slots=True)
class CardRow:
    id: int
    card_no: str
    asn: str
    status: str
    key_version: int


async def batch_by_no(session: AsyncSession, terminal_id: int, batch_no: int) -> UploadBatch | None:
    stmt = select(UploadBatch).where(
        UploadBatch.terminal_id == terminal_id, UploadBatch.batch_no == batch_no
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def cards_by_asn(session: AsyncSession, asns: Collection[str]) -> dict[str, CardRow]:
    if not asns:
        return {}
    stmt = select(Card.id, Card.card_no, Card.asn, Card.status, Card.key_version).where(
        Card.asn.in_(list(asns))
    )
    return {
        row[2]: CardRow(
            id=row[0], card_no=row[1], asn=row[2], status=str(row[3]), key_version=row[4]
        )
        for row in await session.execute(stmt)
    }


async def claimed_card_keys(
    session: AsyncSession, keys: Collection[tuple[str, int]]
) -> set[tuple[str, int]]:
    """Which (ASN, offline counter) pairs an accepted record already holds."""
    if not keys:
        return set()
    stmt = select(OfflineRecord.asn, OfflineRecord.offline_counter).where(
        tuple_(OfflineRecord.asn, OfflineRecord.offline_counter).in_(list(keys)), CLAIMING
    )
    return {(str(a), int(c)) for a, c in await session.execute(stmt) if c is not None}


async def claimed_serial_keys(
    session: AsyncSession, keys: Collection[tuple[str, int]]
) -> set[tuple[str, int]]:
    """Which (terminal number, terminal serial) pairs an accepted record already holds."""
    if not keys:
        return set()
    stmt = select(OfflineRecord.terminal_no, OfflineRecord.terminal_serial).where(
        tuple_(OfflineRecord.terminal_no, OfflineRecord.terminal_serial).in_(list(keys)), CLAIMING
    )
    return {(str(t), int(s)) for t, s in await session.execute(stmt) if s is not None}


async def highest_counters(session: AsyncSession, asns: Collection[str]) -> dict[str, int]:
    """Per card, the highest offline counter of an accepted record (the chain so far)."""
    if not asns:
        return {}
    stmt = (
        select(OfflineRecord.asn, func.max(OfflineRecord.offline_counter))
        .where(OfflineRecord.asn.in_(list(asns)), CLAIMING)
        .group_by(OfflineRecord.asn)
    )
    return {str(a): int(c) for a, c in await session.execute(stmt) if c is not None}


async def insert_batch(session: AsyncSession, values: dict[str, Any]) -> int:
    result = await session.execute(insert(UploadBatch).values(values).returning(UploadBatch.id))
    return int(result.scalar_one())


async def finish_batch(
    session: AsyncSession,
    batch_id: int,
    ledger_transaction_id: int | None,
    response: dict[str, Any],
) -> None:
    await session.execute(
        update(UploadBatch)
        .where(UploadBatch.id == batch_id)
        .values(ledger_transaction_id=ledger_transaction_id, response=response)
        .execution_options(synchronize_session=False)
    )


async def insert_records(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, want_ids: bool = True
) -> dict[int, int]:
    """Bulk insert (executemany / multi-row VALUES); returns record id by position when asked
    (only break items need them, and RETURNING costs on every row)."""
    if not rows:
        return {}
    if not want_ids:
        await session.execute(insert(OfflineRecord), list(rows))
        return {}
    stmt = insert(OfflineRecord).returning(
        OfflineRecord.id, OfflineRecord.position, sort_by_parameter_order=True
    )
    result = await session.execute(stmt, list(rows))
    return {int(position): int(record_id) for record_id, position in result}


async def insert_breaks(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(BreakItem), list(rows))


async def resolve_counter_gaps(
    session: AsyncSession, keys: Collection[tuple[str, int]], now: datetime
) -> int:
    """Close the open counter-gap items that the newly accepted records fill."""
    if not keys:
        return 0
    result = await session.execute(
        update(BreakItem)
        .where(
            and_(
                BreakItem.kind == BreakKind.counter_gap,
                BreakItem.status == BreakStatus.open,
                tuple_(BreakItem.asn, BreakItem.counter).in_(list(keys)),
            )
        )
        .values(status=BreakStatus.resolved, resolved_at=now, detail="filled by a later upload")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def records_of_batch(session: AsyncSession, batch_id: int) -> list[OfflineRecord]:
    stmt = (
        select(OfflineRecord)
        .where(OfflineRecord.batch_id == batch_id)
        .order_by(OfflineRecord.position)
    )
    return list((await session.execute(stmt)).scalars())


async def break_items(
    session: AsyncSession, *, status: BreakStatus | None = None, asn: str | None = None
) -> list[BreakItem]:
    stmt = select(BreakItem).order_by(BreakItem.id)
    if status is not None:
        stmt = stmt.where(BreakItem.status == status)
    if asn is not None:
        stmt = stmt.where(BreakItem.asn == asn)
    return list((await session.execute(stmt)).scalars())
