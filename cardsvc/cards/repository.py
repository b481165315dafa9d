"""SQL of cards, the number sequence and the pending balance moves."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.cards.models import (
    LIVE_STATUSES,
    BalanceRelease,
    Card,
    CardNumberSequence,
    CardStatus,
    ReleaseStatus,
)
from cardsvc.sql import bump_counter


async def get(session: AsyncSession, card_id: int, *, for_update: bool = False) -> Card | None:
    if for_update:
        stmt = select(Card).where(Card.id == card_id).with_for_update()
        return (await session.execute(stmt)).scalar_one_or_none()
    return await session.get(Card, card_id)


async def by_no(session: AsyncSession, card_no: str, *, for_update: bool = False) -> Card | None:
    stmt = select(Card).where(Card.card_no == card_no)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def of_resident(session: AsyncSession, resident_id: int) -> list[Card]:
    stmt = select(Card).where(Card.resident_id == resident_id).order_by(Card.id)
    return list((await session.execute(stmt)).scalars())


async def active_of_resident(
    session: AsyncSession, resident_id: int, *, for_update: bool = False
) -> Card | None:
    """The resident's active card (at most one), read afresh even when the session holds it."""
    stmt = (
        select(Card)
        .where(Card.resident_id == resident_id, Card.status == CardStatus.active)
        .execution_options(populate_existing=True)
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def holding_cards(
    session: AsyncSession, resident_id: int, statuses: tuple[CardStatus, ...]
) -> list[Card]:
    stmt = select(Card).where(Card.resident_id == resident_id, Card.status.in_(statuses))
    return list((await session.execute(stmt)).scalars())


async def add(session: AsyncSession, card: Card) -> Card:
    session.add(card)
    await session.flush()
    return card


async def next_sequence(session: AsyncSession, city_code: str) -> int:
    """Bump and return the city's card sequence (row-locked by the UPDATE itself)."""
    return await bump_counter(
        session, CardNumberSequence.last_value, CardNumberSequence.city_code, city_code
    )


async def add_release(session: AsyncSession, release: BalanceRelease) -> BalanceRelease:
    session.add(release)
    await session.flush()
    return release


async def release_for_card(
    session: AsyncSession, card_id: int, *, for_update: bool = False
) -> BalanceRelease | None:
    stmt = select(BalanceRelease).where(BalanceRelease.card_id == card_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def live_card_with_chip(session: AsyncSession, chip_serial: str) -> Card | None:
    """The live card (personalizing, active, lost, frozen) bound to this chip, if any."""
    stmt = select(Card).where(
        Card.chip_serial == chip_serial, Card.status.in_([CardStatus(s) for s in LIVE_STATUSES])
    )
    return (await session.execute(stmt.limit(1))).scalar_one_or_none()


async def due_release_ids(session: AsyncSession, now: datetime, limit: int = 500) -> list[int]:
    stmt = (
        select(BalanceRelease.id)
        .where(BalanceRelease.status == ReleaseStatus.pending, BalanceRelease.due_at <= now)
        .order_by(BalanceRelease.due_at, BalanceRelease.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def lock_release(session: AsyncSession, release_id: int) -> BalanceRelease | None:
    stmt = select(BalanceRelease).where(BalanceRelease.id == release_id).with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def expired_active_ids(session: AsyncSession, today: object, limit: int = 500) -> list[int]:
    stmt = (
        select(Card.id)
        .where(Card.status == CardStatus.active, Card.expires_on < today)
        .order_by(Card.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())
