"""Opening, listing and resolving break items (models.py says what a break is).

Any domain opens breaks through these functions with plain references (``BreakRef``), so the
core never imports the domain that found the problem. Resolving a break records who closed it,
how and why; it moves no money by itself: where a resolution needs a ledger posting, the domain
that owns the money posts it in the same unit of work. Services never commit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.breaks import repository
from cardsvc.breaks.models import BreakItem, BreakKind, BreakStatus
from cardsvc.breaks.schemas import BreakView, NewBreak, Resolve
from cardsvc.errors import InvalidStateTransition, NotFound, ValidationFailed

MAX_PAGE = 500


def _row(item: NewBreak, now: datetime) -> dict[str, Any]:
    ref = item.ref
    return {
        "kind": item.kind,
        "status": BreakStatus.open,
        "amount": item.amount,
        "clearing_date": item.clearing_date,
        "reason": item.reason,
        "source": ref.source,
        "source_id": ref.source_id,
        "asn": ref.asn,
        "counter": ref.counter,
        "terminal_no": ref.terminal_no,
        "reference": ref.reference,
        "open_key": item.open_key,
        "created_at": now,
        "resolver": None,
        "resolution": None,
        "note": None,
        "resolved_at": None,
    }


async def open_breaks(session: AsyncSession, items: Sequence[NewBreak]) -> None:
    """Open several breaks in one statement (an upload's gaps, gray and refused records)."""
    now = clock.now()
    await repository.insert_many(session, [_row(item, now) for item in items])


async def open_break(session: AsyncSession, item: NewBreak) -> int:
    """Open one break and return its id; with an ``open_key`` already used, the id of the break
    that key opened (nothing new is opened)."""
    new_id = await repository.insert_one(session, _row(item, clock.now()))
    if new_id is not None:
        return new_id
    assert item.open_key is not None  # noqa: S101 - only a taken key skips the insert
    existing = await repository.id_by_open_key(session, item.open_key)
    if existing is None:  # pragma: no cover - the conflicting insert rolled back
        raise InvalidStateTransition("the break's key is being used concurrently; retry")
    return existing


async def list_breaks(
    session: AsyncSession,
    *,
    status: BreakStatus | None = None,
    kind: BreakKind | None = None,
    clearing_date: date | None = None,
    asn: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[BreakView]:
    """Breaks in id order, filtered; page on with ``after_id`` = the last id seen."""
    rows = await repository.listing(
        session,
        status=status,
        kind=kind,
        clearing_date=clearing_date,
        asn=asn.upper() if asn else None,
        after_id=after_id,
        limit=max(1, min(limit, MAX_PAGE)),
    )
    return [BreakView.model_validate(row) for row in rows]


@dataclass(frozen=True)
class BreakFilter:
    """What an inbox search keeps: every field that is set must match."""

    status: BreakStatus | None = None
    kinds: tuple[BreakKind, ...] = ()
    date_from: date | None = None
    date_to: date | None = None
    asn: str | None = None
    terminal_no: str | None = None
    reference: str | None = None


@dataclass(frozen=True)
class BreakPage:
    items: list[BreakView]
    total: int  # breaks that match, over every page
    amount: int  # the sum of their known amounts, fen


SORTS = tuple(repository.SORTS)


async def search_breaks(
    session: AsyncSession,
    where: BreakFilter,
    *,
    sort: str = "id",
    descending: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> BreakPage:
    """One page of the breaks that match, in ``sort`` order (ties by id), with the totals."""
    if sort not in repository.SORTS:
        raise ValidationFailed(f"sort by one of: {', '.join(SORTS)}")
    filters = {**asdict(where), "asn": where.asn.upper() if where.asn else None}
    rows = await repository.search(
        session,
        filters,
        sort=sort,
        descending=descending,
        offset=max(0, offset),
        limit=max(1, min(limit, MAX_PAGE)),
    )
    total, amount = await repository.count(session, filters)
    return BreakPage([BreakView.model_validate(row) for row in rows], total, amount)


async def get_break(session: AsyncSession, break_id: int) -> BreakView:
    row = await repository.get(session, break_id)
    if row is None:
        raise NotFound(f"no break item {break_id}")
    return BreakView.model_validate(row)


def _values(how: Resolve) -> dict[str, Any]:
    return {"resolver": how.resolver, "resolution": how.resolution, "note": how.note}


async def lock_break(session: AsyncSession, break_id: int) -> BreakView:
    """The break, its row locked until the caller's transaction ends (NotFound when none)."""
    row = await repository.get(session, break_id, for_update=True)
    if row is None:
        raise NotFound(f"no break item {break_id}")
    return BreakView.model_validate(row)


async def resolve(session: AsyncSession, break_id: int, how: Resolve) -> BreakView:
    """Close an open break; a resolved one refuses (``InvalidStateTransition``), so two people
    working the same break cannot both close it."""
    row: BreakItem | None = await repository.get(session, break_id, for_update=True)
    if row is None:
        raise NotFound(f"no break item {break_id}")
    if row.status is not BreakStatus.open:
        raise InvalidStateTransition(f"break item {break_id} is already {row.status.value}")
    row.status = BreakStatus.resolved
    row.resolver, row.resolution, row.note = how.resolver, how.resolution, how.note
    row.resolved_at = clock.now()
    await session.flush()
    return BreakView.model_validate(row)


async def resolve_by_key(session: AsyncSession, open_key: str, how: Resolve) -> int:
    """Close the open break that ``open_key`` opened, if any (a job's own break, once the thing
    it waited for happened); how many were closed (0 or 1)."""
    return await repository.resolve_open_key(session, open_key, _values(how), clock.now())


async def resolve_at(
    session: AsyncSession, kind: BreakKind, keys: Collection[tuple[str, int]], how: Resolve
) -> int:
    """Close the open breaks of ``kind`` at these (ASN, counter) keys (counter gaps that later
    records fill); how many were closed."""
    return await repository.resolve_open_at(session, kind, keys, _values(how), clock.now())
