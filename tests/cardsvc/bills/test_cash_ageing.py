"""Counter cash of a bill payment that did not pay and was not handed back ages into a break
for finance, once, and handing it back closes the break (docs/bills.md §5), against the real
biller-sim process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from cardsvc import clock
from cardsvc.bills import service, tasks
from cardsvc.bills.models import PaymentStatus, SubChannel
from cardsvc.breaks.models import BreakItem, BreakKind, BreakStatus
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.resources import Resources
from tests.billersim import SimControl
from tests.cardsvc.bills.paying import Bills, biller_client, register_billers

COUNTER = "DESK09"


@pytest.fixture
async def bills(resources: Resources, paying_sim: SimControl) -> AsyncIterator[Bills]:
    await register_billers(resources, paying_sim.url)
    async with biller_client(resources) as client:
        yield Bills(resources, client, paying_sim)


async def cash_payment(bills: Bills, bill_key: str, receipt: str) -> str:
    found = await bills.query(bill_key)
    async with unit_of_work(bills.resources.sessions) as session:
        made = await service.submit_payment(
            session, bills.resources.settings,
            service.Payer(SubChannel.counter, counter_code=COUNTER, operator="op"),
            biller_code="WATER01", reference=found.reference, amount=None, key=receipt,
        )  # fmt: skip
    return str(made.payment.serial)


async def age(resources: Resources) -> int:
    return await tasks.age_unreturned_cash(resources.sessions, resources.settings, clock.now())


async def aged_breaks(resources: Resources) -> dict[str, BreakItem]:
    async with resources.sessions() as session:
        stmt = select(BreakItem).where(BreakItem.kind == BreakKind.bill_cash_unreturned)
        return {b.reference or "": b for b in (await session.execute(stmt)).scalars()}


async def hand_back(resources: Resources, serial: str) -> None:
    async with unit_of_work(resources.sessions) as session:
        await service.return_cash(
            session, resources.settings, serial, counter_code=COUNTER, actor="op"
        )


@pytest.mark.settings(bill_cash_break_after_seconds=86400)
async def test_cash_not_handed_back_in_time_is_a_break_until_it_is(
    bills: Bills, resources: Resources
) -> None:
    bills.sim.behave("WATER01", "refuse")
    kept = await cash_payment(bills, "3100000001", "R-1")
    returned = await cash_payment(bills, "3100000002", "R-2")
    await bills.run()
    assert (await bills.payment(kept)).status is PaymentStatus.failed
    await hand_back(resources, returned)  # handed back at once: it never ages
    bills.sim.behave("WATER01", "normal")
    paid = await cash_payment(bills, "3100000003", "R-3")  # paid: its cash is the biller's
    await bills.run()
    assert (await bills.payment(paid)).status is PaymentStatus.paid

    clock.advance(timedelta(hours=23, minutes=59))
    assert await age(resources) == 0
    clock.advance(timedelta(minutes=2))
    assert await age(resources) == 1
    assert await age(resources) == 0  # once per payment
    found = await aged_breaks(resources)
    assert list(found) == [kept]
    item = found[kept]
    failed = await bills.payment(kept)
    assert (item.status, item.amount, item.source, item.source_id) == (
        BreakStatus.open, failed.amount, "bill_payment", failed.id
    )  # fmt: skip
    assert item.reason.startswith(f"counter {COUNTER}: cash of bill {kept} (biller WATER01, failed")
    assert failed.cash_aged_at is not None
    # Nothing moved: the cash is still the payer's, in the counter's suspense.
    assert await bills.balance(AccountKind.bill_suspense, COUNTER) == failed.amount
    async with resources.sessions() as session:
        assert (await ledger.check_invariants(session)).ok

    # Handing it back closes the break.
    await hand_back(resources, kept)
    closed = (await aged_breaks(resources))[kept]
    assert (closed.status, closed.resolution, closed.resolver) == (
        BreakStatus.resolved, "cash_returned", "op"
    )  # fmt: skip
    assert await bills.balance(AccountKind.bill_suspense, COUNTER) == 0
