"""A biller's decision that comes after the payment's 30-day hold ran out, against the real
biller-sim process: nothing is taken, the payment ends ``expired``, the outbox stops asking, and
a break tells finance (docs/bills.md §3.3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from cardsvc import clock
from cardsvc.bills import service, tasks
from cardsvc.bills.models import PaymentStatus, SubChannel
from cardsvc.breaks.models import BreakItem, BreakKind, BreakStatus
from cardsvc.clearing import service as clearing
from cardsvc.db import unit_of_work
from cardsvc.errors import InvalidStateTransition
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.resources import Resources
from tests.billersim import SimControl
from tests.cardsvc.bills.paying import Bills, biller_client, register_billers
from tests.factories import make_card

MONEY = 100_000


@pytest.fixture
async def bills(resources: Resources, paying_sim: SimControl) -> AsyncIterator[Bills]:
    await register_billers(resources, paying_sim.url)
    async with biller_client(resources) as client:
        yield Bills(resources, client, paying_sim)


async def expired_breaks(resources: Resources) -> list[BreakItem]:
    async with resources.sessions() as session:
        stmt = select(BreakItem).where(BreakItem.kind == BreakKind.bill_hold_expired)
        return list((await session.execute(stmt)).scalars())


async def expire_holds(resources: Resources) -> int:
    async with unit_of_work(resources.sessions) as session:
        return await ledger.expire_holds(session, clock.now())


async def test_a_refund_answered_after_the_hold_ran_out_ends_expired(
    bills: Bills, resources: Resources
) -> None:
    card = await make_card(resources, 1, account=MONEY, pin=None)
    resident = (AccountKind.resident_account, str(card.resident_id))
    found = await bills.query("3100000001")
    bills.sim.behave("WATER01", "lost", bill_key="3100000001", times=1)
    serial = str((await bills.pay_online(card.resident_id, found, "k")).payment.serial)
    await bills.run()
    # The biller goes down for longer than the hold lasts; the day is cut meanwhile, so the
    # unknown outcome is to be refunded, and the refund is sent, unanswered, for 31 days.
    bills.sim.behave("WATER01", "down")
    async with resources.sessions() as session:
        day = await clearing.clearing_date(session, resources.settings)
    await clearing.close_through(resources.sessions, resources.settings, day)
    clock.advance(timedelta(minutes=16))
    await bills.run()
    assert (await bills.payment(serial)).status is PaymentStatus.refunding
    clock.advance(timedelta(days=service.HOLD_DAYS, hours=1))
    assert await expire_holds(resources) == 1
    assert await bills.available(*resident) == MONEY  # the money is the resident's again

    # The biller answers at last: refunded. Nothing can be posted from a hold that is gone.
    bills.sim.behave("WATER01", "normal")
    assert await bills.run() == {"expired": 1}
    ended = await bills.payment(serial)
    assert (ended.status, ended.reason, ended.status.visible) == (
        PaymentStatus.expired, "hold_expired", "expired"
    )  # fmt: skip
    assert ended.refund_receipt_no
    assert (ended.pay_tx_id, ended.refund_tx_id) == (None, None)
    assert bills.sim.payments()[serial]["state"] == "refunded"
    assert await bills.outbox_depth() == 0
    assert await bills.run() == {}  # nothing is asked again
    assert await bills.balance(*resident) == MONEY
    assert await bills.balance(AccountKind.biller_payable, "WATER01") == 0
    (item,) = await expired_breaks(resources)
    assert (item.reference, item.amount, item.status, item.source) == (
        serial, found.amount_due, BreakStatus.open, "bill_payment"
    )  # fmt: skip
    assert item.source_id == ended.id
    assert f"serial {serial}" in item.reason
    assert "refund R" in item.reason
    async with resources.sessions() as session:
        assert (await ledger.check_invariants(session)).ok


async def test_a_success_called_back_after_the_hold_ran_out_ends_expired(
    bills: Bills, resources: Resources
) -> None:
    counter = "DESK09"
    found = await bills.query("3100000002")
    async with unit_of_work(resources.sessions) as session:
        made = await service.submit_payment(
            session, resources.settings,
            service.Payer(SubChannel.counter, counter_code=counter, operator="op"),
            biller_code="WATER01", reference=found.reference, amount=None, key="R-1",
        )  # fmt: skip
    serial = str(made.payment.serial)
    # The worker is not running while the hold runs out (and its expiry job has not run yet).
    clock.advance(timedelta(days=service.HOLD_DAYS, seconds=1))
    body = {"serial": serial, "result": "success", "receipt_no": "W-1"}
    async with unit_of_work(resources.sessions) as session:
        await tasks.apply_callback(session, resources.settings, "WATER01", body)
    ended = await bills.payment(serial)
    assert (ended.status, ended.receipt_no) == (PaymentStatus.expired, "W-1")
    assert await bills.outbox_depth() == 0
    # The counter's cash stays in its suspense (the biller counts the bill paid): it is not
    # handed back, and the hold no longer keeps it.
    assert await bills.balance(AccountKind.bill_suspense, counter) == found.amount_due
    assert await bills.available(AccountKind.bill_suspense, counter) == found.amount_due
    assert await expire_holds(resources) == 0
    async with unit_of_work(resources.sessions) as session:
        with pytest.raises(InvalidStateTransition):
            await service.return_cash(
                session, resources.settings, serial, counter_code=counter, actor="op"
            )
    # The same callback again is acknowledged; another receipt is a conflict.
    async with unit_of_work(resources.sessions) as session:
        await tasks.apply_callback(session, resources.settings, "WATER01", body)
    async with unit_of_work(resources.sessions) as session:
        with pytest.raises(service.ResultConflict):
            await tasks.apply_callback(
                session, resources.settings, "WATER01", {**body, "receipt_no": "W-2"}
            )
    (item,) = await expired_breaks(resources)
    assert (item.reference, item.amount) == (serial, found.amount_due)
    assert "success (receipt W-1)" in item.reason
