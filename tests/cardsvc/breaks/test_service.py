"""Break items as a core domain: any domain opens them with plain references; finance lists and
resolves them; a resolved break stays resolved."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind, BreakStatus
from cardsvc.breaks.schemas import BreakRef, NewBreak, Resolve
from cardsvc.errors import InvalidStateTransition, NotFound

DAY = date(2026, 11, 23)
OPENED = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
ASN = "3211000000000017"


def _load_break(load_id: int, amount: int = 5000) -> NewBreak:
    return NewBreak(
        kind=BreakKind.aged_load,
        clearing_date=DAY,
        reason="pending load without card evidence",
        amount=amount,
        ref=BreakRef(source="purse_load", source_id=load_id, asn=ASN, counter=3,
                     terminal_no="321100030001"),
        open_key=f"aged_load:{load_id}",
    )  # fmt: skip


async def test_open_list_and_resolve_once(session: AsyncSession) -> None:
    clock.set_time(OPENED)
    first = await breaks.open_break(session, _load_break(5))
    # The same key again (a job that ran twice) opens nothing new.
    assert await breaks.open_break(session, _load_break(5)) == first
    await breaks.open_breaks(
        session,
        [
            NewBreak(
                kind=BreakKind.counter_gap,
                clearing_date=DAY + timedelta(days=1),
                reason="counters 1..1 not seen",
                ref=BreakRef(source="offline_record", source_id=9, asn=ASN, counter=1),
            ),
            NewBreak(
                kind=BreakKind.counter_gap,
                clearing_date=DAY + timedelta(days=1),
                reason="counters 1..2 not seen",
                ref=BreakRef(source="offline_record", source_id=9, asn=ASN, counter=2),
            ),
        ],
    )
    await session.commit()

    everything = await breaks.list_breaks(session)
    assert [(b.kind, b.counter, b.amount) for b in everything] == [
        (BreakKind.aged_load, 3, 5000),
        (BreakKind.counter_gap, 1, None),
        (BreakKind.counter_gap, 2, None),
    ]
    view = everything[0]
    assert (view.status, view.source, view.source_id, view.created_at) == (
        BreakStatus.open, "purse_load", 5, OPENED,
    )  # fmt: skip
    assert [b.id for b in await breaks.list_breaks(session, clearing_date=DAY)] == [first]
    assert len(await breaks.list_breaks(session, kind=BreakKind.counter_gap)) == 2
    page = await breaks.list_breaks(session, limit=2)
    assert len(page) == 2
    rest = await breaks.list_breaks(session, after_id=page[-1].id)
    assert [b.counter for b in rest] == [2]

    clock.advance(timedelta(hours=3))
    how = Resolve(resolver="finance.wang", resolution="written_off", note="card destroyed")
    done = await breaks.resolve(session, first, how)
    await session.commit()
    assert (done.status, done.resolver, done.resolution, done.note, done.resolved_at) == (
        BreakStatus.resolved, "finance.wang", "written_off", "card destroyed",
        OPENED + timedelta(hours=3),
    )  # fmt: skip
    with pytest.raises(InvalidStateTransition, match="already resolved"):
        await breaks.resolve(session, first, how)
    with pytest.raises(NotFound):
        await breaks.resolve(session, 10_000, how)
    assert [b.id for b in await breaks.list_breaks(session, status=BreakStatus.open)] == [
        b.id for b in everything[1:]
    ]


async def test_resolving_by_key_and_by_card_counter(session: AsyncSession) -> None:
    load_break = await breaks.open_break(session, _load_break(8))
    await breaks.open_breaks(
        session,
        [
            NewBreak(
                kind=BreakKind.counter_gap,
                clearing_date=DAY,
                reason="gap",
                ref=BreakRef(source="offline_record", source_id=1, asn=ASN, counter=c),
            )
            for c in (4, 5, 6)
        ],
    )
    auto = Resolve(resolver="system:test", resolution="filled")
    assert await breaks.resolve_at(session, BreakKind.counter_gap, {(ASN, 4), (ASN, 6)}, auto) == 2
    # Another kind at the same card and counter is not touched.
    assert await breaks.resolve_at(session, BreakKind.gray, {(ASN, 5)}, auto) == 0
    assert await breaks.resolve_by_key(session, "aged_load:8", auto) == 1
    assert await breaks.resolve_by_key(session, "aged_load:8", auto) == 0
    await session.commit()
    open_now = await breaks.list_breaks(session, status=BreakStatus.open)
    assert [(b.kind, b.counter) for b in open_now] == [(BreakKind.counter_gap, 5)]
    assert (await breaks.get_break(session, load_break)).resolution == "filled"


def test_references_are_validated_before_anything_is_written() -> None:
    with pytest.raises(ValidationError):
        BreakRef(source="Purse Load")  # not a slug
    with pytest.raises(ValidationError):
        BreakRef(source="purse_load", asn="321100000000001")  # 15 digits
    with pytest.raises(ValidationError):
        NewBreak(kind=BreakKind.gray, clearing_date=DAY, reason="x", amount=-1,
                 ref=BreakRef(source="offline_record"))  # fmt: skip
    with pytest.raises(ValidationError):
        Resolve(resolver="", resolution="filled")
