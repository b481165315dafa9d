"""Two-phase holds: pending -> posted (full or partial) | voided | expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.ledger import service as ledger
from cardsvc.ledger.errors import (
    HoldExpired,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidStateTransition,
)
from cardsvc.ledger.models import AccountKind, HoldStatus
from cardsvc.ledger.schemas import AccountRef
from tests.cardsvc.ledger.helpers import DAY, card, load, merchant, purchase_batch

BILLER = AccountRef(AccountKind.biller_payable, "WATER")


async def _funded(session: AsyncSession, amount: int = 1000) -> None:
    await ledger.post(session, load("l1", card(1), amount))
    await session.commit()


async def _hold(session: AsyncSession, key: str, amount: int, minutes: int = 10) -> int:
    hold = await ledger.place_hold(
        session,
        idempotency_key=key,
        account=card(1),
        amount=amount,
        expires_at=datetime.now(UTC) + timedelta(minutes=minutes),
        counterparty=BILLER,
        clearing_date=DAY,
    )
    await session.commit()
    return hold.id


async def test_hold_reserves_and_partial_post_releases_the_rest(session: AsyncSession) -> None:
    await _funded(session)
    hold_id = await _hold(session, "bill:1", 600)
    assert await ledger.balance(session, card(1)) == 1000
    assert await ledger.available(session, card(1)) == 400
    # other spending cannot eat into held money
    with pytest.raises(InsufficientFunds):
        await ledger.post(session, purchase_batch("u1", [(card(1), 401)], merchant(1)))
    await session.rollback()
    with pytest.raises(InsufficientFunds):
        await _hold(session, "bill:2", 401)
    await session.rollback()

    posted = await ledger.post_hold(
        session, hold_id, 450, idempotency_key="bill:1:post", clearing_date=DAY
    )
    await session.commit()
    assert posted.hold_id == hold_id
    assert posted.amount == 450
    assert await ledger.balance(session, card(1)) == 550
    assert await ledger.available(session, card(1)) == 550
    assert await ledger.balance(session, BILLER) == 450
    hold = await ledger.get_hold(session, hold_id)
    assert (hold.status, hold.posted_amount, hold.transaction_id) == (
        HoldStatus.posted,
        450,
        posted.id,
    )

    again = await ledger.post_hold(
        session, hold_id, 450, idempotency_key="bill:1:post", clearing_date=DAY
    )
    assert again.replayed
    assert again.id == posted.id
    with pytest.raises(InvalidStateTransition):
        await ledger.post_hold(
            session, hold_id, 450, idempotency_key="bill:1:post2", clearing_date=DAY
        )
    with pytest.raises(InvalidStateTransition):
        await ledger.void_hold(session, hold_id, reason="too late")
    await session.rollback()
    assert (await ledger.check_invariants(session)).ok


async def test_void_releases_and_is_idempotent(session: AsyncSession) -> None:
    await _funded(session)
    hold_id = await _hold(session, "bill:1", 1000)
    assert await ledger.available(session, card(1)) == 0
    await ledger.void_hold(session, hold_id, reason="biller down")
    await ledger.void_hold(session, hold_id, reason="twice")
    await session.commit()
    assert await ledger.available(session, card(1)) == 1000
    assert (await ledger.get_hold(session, hold_id)).status is HoldStatus.voided
    with pytest.raises(InvalidStateTransition):
        await ledger.post_hold(session, hold_id, 1, idempotency_key="p", clearing_date=DAY)
    await session.rollback()
    assert (await ledger.check_invariants(session)).ok


async def test_expiry_releases_and_refuses_a_late_post(session: AsyncSession) -> None:
    await _funded(session)
    stale = await _hold(session, "bill:1", 300, minutes=-1)
    fresh = await _hold(session, "bill:2", 200, minutes=10)
    assert await ledger.available(session, card(1)) == 500
    with pytest.raises(HoldExpired):
        await ledger.post_hold(session, stale, 300, idempotency_key="late", clearing_date=DAY)
    await session.rollback()
    assert await ledger.expire_holds(session, datetime.now(UTC)) == 1
    assert await ledger.expire_holds(session, datetime.now(UTC)) == 0
    await session.commit()
    assert await ledger.available(session, card(1)) == 800
    assert (await ledger.get_hold(session, stale)).status is HoldStatus.expired
    assert (await ledger.get_hold(session, fresh)).status is HoldStatus.pending
    assert await ledger.expire_holds(session, datetime.now(UTC) + timedelta(hours=1)) == 1
    await session.commit()
    assert await ledger.available(session, card(1)) == 1000
    assert (await ledger.check_invariants(session)).ok


async def test_hold_retry_and_conflict(session: AsyncSession) -> None:
    await _funded(session)
    expires = datetime.now(UTC) + timedelta(minutes=5)
    kwargs = {
        "account": card(1),
        "expires_at": expires,
        "counterparty": BILLER,
        "clearing_date": DAY,
    }
    first = await ledger.place_hold(session, idempotency_key="h", amount=100, **kwargs)  # type: ignore[arg-type]
    again = await ledger.place_hold(session, idempotency_key="h", amount=100, **kwargs)  # type: ignore[arg-type]
    assert again.replayed
    assert again.id == first.id
    assert await ledger.available(session, card(1)) == 900  # reserved once
    with pytest.raises(IdempotencyConflict):
        await ledger.place_hold(session, idempotency_key="h", amount=101, **kwargs)  # type: ignore[arg-type]
    # A retry after the first attempt reserved everything left is still the replay.
    whole = await ledger.place_hold(session, idempotency_key="all", amount=900, **kwargs)  # type: ignore[arg-type]
    retried = await ledger.place_hold(session, idempotency_key="all", amount=900, **kwargs)  # type: ignore[arg-type]
    assert (retried.replayed, retried.id) == (True, whole.id)
    assert await ledger.available(session, card(1)) == 0
