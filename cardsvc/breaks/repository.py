"""SQL of break items."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table, and_, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.breaks.models import BreakItem, BreakKind, BreakStatus
from cardsvc.sql import insert_ignore_stmt

_table: Table = BreakItem.__table__  # type: ignore[assignment]


async def insert_many(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert break rows; a row whose ``open_key`` is taken is skipped (opened before)."""
    if rows:
        await session.execute(insert_ignore_stmt(session, _table), list(rows))


async def insert_one(session: AsyncSession, row: dict[str, Any]) -> int | None:
    """Insert one break row and return its id; None when its ``open_key`` is taken."""
    stmt = insert_ignore_stmt(session, _table).values(**row).returning(_table.c.id)
    found: int | None = (await session.execute(stmt)).scalar_one_or_none()
    return found


async def id_by_open_key(session: AsyncSession, open_key: str) -> int | None:
    stmt = select(BreakItem.id).where(BreakItem.open_key == open_key)
    found: int | None = (await session.execute(stmt)).scalar_one_or_none()
    return found


async def get(
    session: AsyncSession, break_id: int, *, for_update: bool = False
) -> BreakItem | None:
    stmt = select(BreakItem).where(BreakItem.id == break_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def listing(
    session: AsyncSession,
    *,
    status: BreakStatus | None,
    kind: BreakKind | None,
    clearing_date: date | None,
    asn: str | None,
    after_id: int,
    limit: int,
) -> list[BreakItem]:
    stmt = select(BreakItem).where(BreakItem.id > after_id).order_by(BreakItem.id).limit(limit)
    if status is not None:
        stmt = stmt.where(BreakItem.status == status)
    if kind is not None:
        stmt = stmt.where(BreakItem.kind == kind)
    if clearing_date is not None:
        stmt = stmt.where(BreakItem.clearing_date == clearing_date)
    if asn is not None:
        stmt = stmt.where(BreakItem.asn == asn)
    return list((await session.execute(stmt)).scalars())


# The orders a search may take: a column, then the id to break ties (a stable order for pages).
SORTS: dict[str, Any] = {
    "id": BreakItem.id,
    "clearing_date": BreakItem.clearing_date,
    "amount": BreakItem.amount,
    "kind": BreakItem.kind,
    "created_at": BreakItem.created_at,
}


def _filtered(stmt: Any, filters: dict[str, Any]) -> Any:
    if filters.get("status") is not None:
        stmt = stmt.where(BreakItem.status == filters["status"])
    if filters.get("kinds"):
        stmt = stmt.where(BreakItem.kind.in_(filters["kinds"]))
    if filters.get("date_from") is not None:
        stmt = stmt.where(BreakItem.clearing_date >= filters["date_from"])
    if filters.get("date_to") is not None:
        stmt = stmt.where(BreakItem.clearing_date <= filters["date_to"])
    for name in ("asn", "terminal_no", "reference"):
        if filters.get(name) is not None:
            stmt = stmt.where(getattr(BreakItem, name) == filters[name])
    return stmt


async def search(
    session: AsyncSession,
    filters: dict[str, Any],
    *,
    sort: str,
    descending: bool,
    offset: int,
    limit: int,
) -> list[BreakItem]:
    column = SORTS[sort]
    order = [column.desc(), BreakItem.id.desc()] if descending else [column, BreakItem.id]
    stmt = _filtered(select(BreakItem), filters).order_by(*order).offset(offset).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def count(session: AsyncSession, filters: dict[str, Any]) -> tuple[int, int]:
    """How many breaks match, and the sum of their known amounts (fen)."""
    totals = select(func.count(), func.coalesce(func.sum(BreakItem.amount), 0)).select_from(
        BreakItem
    )
    found, total = (await session.execute(_filtered(totals, filters))).one()
    return int(found), int(total)


def _resolved(values: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {"status": BreakStatus.resolved, "resolved_at": now, **values}


async def resolve_open_key(
    session: AsyncSession, open_key: str, values: dict[str, Any], now: datetime
) -> int:
    result: Any = await session.execute(
        update(BreakItem)
        .where(BreakItem.open_key == open_key, BreakItem.status == BreakStatus.open)
        .values(_resolved(values, now))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


async def resolve_open_at(
    session: AsyncSession,
    kind: BreakKind,
    keys: Collection[tuple[str, int]],
    values: dict[str, Any],
    now: datetime,
) -> int:
    """Close the open breaks of ``kind`` at these (ASN, counter) keys; how many were closed."""
    if not keys:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        # One probe of the (asn, counter) index per key: OFFSET 0 keeps the lateral subquery
        # from being flattened into a join that the planner may run as a scan of every break
        # item per key (the statement PostgreSQL spent most of its upload time on, while
        # break_items grows with every counter gap).
        result: Any = await session.execute(
            text(
                "UPDATE break_items AS u SET status = :resolved, resolved_at = :now, "
                "resolver = :resolver, resolution = :resolution, note = :note "
                "FROM unnest(CAST(:asns AS VARCHAR[]), CAST(:counters AS INTEGER[])) AS k(a, c) "
                "JOIN LATERAL (SELECT b.id FROM break_items AS b WHERE b.asn = k.a "
                "AND b.counter = k.c AND b.kind = :kind AND b.status = :open OFFSET 0) AS hit "
                "ON true WHERE u.id = hit.id"
            ),
            {
                "resolved": BreakStatus.resolved.value,
                "open": BreakStatus.open.value,
                "kind": kind.value,
                "now": now,
                "resolver": values["resolver"],
                "resolution": values["resolution"],
                "note": values["note"],
                "asns": [k[0] for k in keys],
                "counters": [k[1] for k in keys],
            },
        )
        return int(result.rowcount or 0)
    result = await session.execute(
        update(BreakItem)
        .where(
            and_(
                BreakItem.kind == kind,
                BreakItem.status == BreakStatus.open,
                tuple_(BreakItem.asn, BreakItem.counter).in_(list(keys)),
            )
        )
        .values(_resolved(values, now))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)
