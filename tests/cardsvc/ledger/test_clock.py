"""The ledger takes "now" from the one clock (cardsvc.clock): postings are stamped with it and
hold expiry is judged by it, so a test that sets the time moves the ledger with everything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.ledger import service as ledger
from cardsvc.ledger.errors import HoldExpired
from cardsvc.ledger.models import AccountKind
from cardsvc.ledger.schemas import AccountRef
from tests.cardsvc.ledger.helpers import DAY, card, load

MOMENT = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
BILLER = AccountRef(AccountKind.biller_payable, "GAS")


def test_the_clock_stands_where_it_is_set_and_runs_again_after_reset() -> None:
    clock.set_time(MOMENT)
    assert clock.now() == MOMENT
    assert clock.advance(timedelta(seconds=90)) == MOMENT + timedelta(seconds=90)
    clock.reset()
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=5)
    with clock.stopped_at(MOMENT):
        assert clock.now() == MOMENT
    assert clock.now() != MOMENT
    with pytest.raises(ValueError, match="aware"):
        clock.set_time(datetime(2031, 1, 1))


async def test_postings_and_hold_expiry_follow_the_clock(session: AsyncSession) -> None:
    clock.set_time(MOMENT)
    posted = await ledger.post(session, load("clock-load", card(7), 1000))
    assert posted.posted_at == MOMENT
    hold = await ledger.place_hold(
        session,
        idempotency_key="clock-hold",
        account=card(7),
        amount=300,
        expires_at=MOMENT + timedelta(minutes=10),
        counterparty=BILLER,
        clearing_date=DAY,
    )
    await session.commit()
    assert hold.created_at == MOMENT
    # Ten minutes later by the clock (seconds by the wall), the hold has expired for the ledger.
    clock.advance(timedelta(minutes=10))
    with pytest.raises(HoldExpired):
        await ledger.post_hold(
            session, hold.id, 300, idempotency_key="clock-hold:post", clearing_date=DAY
        )
    await session.rollback()
    assert await ledger.expire_holds(session, clock.now()) == 1
