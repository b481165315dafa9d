"""Refunds after the cut, across days, against the real biller-sim process: a refund made on a
day after the biller was paid out refunds the resident without the biller's payable going
below zero, the day's batch and file carry it, and a refund answered a day after it was first
sent is on the file of the day it was posted (docs/bills.md §3.3, §11)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from cardsvc import clock
from cardsvc.bills import service
from cardsvc.bills.models import PaymentStatus
from cardsvc.bills.schemas import BillerChange, FeeRule
from cardsvc.clearing import service as clearing
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.resources import Resources
from settlement.billers.models import BillerBatch
from settlement.billrecon import files
from settlement.billrecon import service as recon
from settlement.billrecon.models import ReconStatus
from settlement.nightly import service as nightly
from tests.billersim import SimControl
from tests.cardsvc.bills.paying import Bills, biller_client, register_billers
from tests.factories import make_card

FEE = 100  # fen per payment: the fee of a refunded payment is carried into the next payout


@pytest.fixture
async def bills(resources: Resources, paying_sim: SimControl) -> AsyncIterator[Bills]:
    await register_billers(resources, paying_sim.url)
    async with unit_of_work(resources.sessions) as session:
        await service.change_biller(
            session, "WATER01", BillerChange(fee=FeeRule(fixed=FEE, bps=0, max=0)), actor="t"
        )
    async with biller_client(resources) as client:
        yield Bills(resources, client, paying_sim)


async def open_day(resources: Resources) -> date:
    async with resources.sessions() as session:
        return await clearing.clearing_date(session, resources.settings)


async def cut_and_settle(resources: Resources) -> date:
    """Cut the open day and run its nightly settlement (payouts and bank file included)."""
    day = await open_day(resources)
    await clearing.close_through(resources.sessions, resources.settings, day)
    result = await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    assert result.status.value == "settled", result
    return day


async def payable(bills: Bills) -> int:
    return await bills.balance(AccountKind.biller_payable, "WATER01")


async def batch(resources: Resources, day: date) -> tuple[int, int, int, int, str]:
    async with resources.sessions() as session:
        found = (
            await session.execute(
                select(BillerBatch).where(
                    BillerBatch.clearing_date == day, BillerBatch.biller_code == "WATER01"
                )
            )
        ).scalar_one()
    return found.count, found.gross, found.fee, found.net, found.status.value


async def file_of(resources: Resources, day: date) -> tuple[ReconStatus, list[tuple[str, str]]]:
    async with unit_of_work(resources.sessions) as session:
        biller = await service.get_biller(session, "WATER01")
        row = await recon.build(session, "CITYCARD", day, biller)
        lines = [(ln.serial, ln.type) for ln in files.parse(row.file_text.encode()).lines]
        return row.status, lines


async def test_a_refund_on_a_day_after_the_payout_refunds_the_resident(
    bills: Bills, resources: Resources
) -> None:
    card = await make_card(resources, 1, account=100_000, pin=None)
    resident = (AccountKind.resident_account, str(card.resident_id))

    # Day 1: a bill paid, the day settled and the biller paid out: its payable is empty.
    first = await bills.query("3100000001")
    await bills.pay_online(card.resident_id, first, "k-1")
    await bills.run()
    day1 = await cut_and_settle(resources)
    assert await payable(bills) == 0

    # Day 2: a payment whose answer is lost; the biller is down, and the day is cut before the
    # outcome is known: it is to be refunded.
    second = await bills.query("3100000002")
    bills.sim.behave("WATER01", "lost", bill_key="3100000002", times=1)
    serial = str((await bills.pay_online(card.resident_id, second, "k-2")).payment.serial)
    await bills.run()
    bills.sim.behave("WATER01", "down")
    day2 = await cut_and_settle(resources)
    clock.advance(timedelta(minutes=16))
    await bills.run()
    assert (await bills.payment(serial)).status is PaymentStatus.refunding

    # Day 3: the refund is sent, unanswered; the day is cut and settled with nothing on it.
    clock.advance(timedelta(seconds=30))
    await bills.run()
    sent = await bills.payment(serial)
    assert (sent.status, sent.refund_date) == (PaymentStatus.refunding, await open_day(resources))
    day3 = await cut_and_settle(resources)

    # Day 4: the biller answers the refund sent on day 3 (it keeps it under that date). No
    # payment of the day covers it, and none needs to: the refund posts the payment it undoes.
    bills.sim.behave("WATER01", "normal")
    clock.advance(timedelta(seconds=30))
    await bills.run()
    refunded = await bills.payment(serial)
    assert refunded.status is PaymentStatus.refunded
    day4 = await open_day(resources)
    assert refunded.posted_date == refunded.refund_date == day4
    assert bills.sim.payments()[serial]["state"] == "refunded"
    assert await bills.balance(*resident) == 100_000 - first.amount_due
    assert await bills.available(*resident) == 100_000 - first.amount_due
    assert await payable(bills) == 0
    async with resources.sessions() as session:
        assert (await ledger.check_invariants(session)).ok

    # Each day's file is the ledger's: day 3 has no line (nothing was posted on it), day 4 the
    # payment and its refund.
    assert await file_of(resources, day3) == (ReconStatus.sending, [])
    assert await file_of(resources, day4) == (
        ReconStatus.sending, [(serial, "payment"), (str(refunded.refund_serial), "refund")]
    )  # fmt: skip

    # Day 4's batch nets to the payment's fee, carried; day 5's payout takes it.
    await cut_and_settle(resources)
    assert await batch(resources, day4) == (2, 0, FEE, -FEE, "carried")
    third = await bills.query("3100000003")
    await bills.pay_online(card.resident_id, third, "k-3")
    await bills.run()
    day5 = await cut_and_settle(resources)
    assert await batch(resources, day5) == (1, third.amount_due, FEE, third.amount_due - FEE,
                                            "posted")  # fmt: skip
    assert await payable(bills) == 0
    assert await bills.balance(AccountKind.fee_income, "") == 3 * FEE
    assert day1 < day2 < day3 < day4 < day5


async def test_a_reversal_the_biller_refuses_after_its_cut_is_refunded(
    bills: Bills, resources: Resources
) -> None:
    card = await make_card(resources, 1, account=100_000, pin=None)
    resident = (AccountKind.resident_account, str(card.resident_id))
    found = await bills.query("3100000004")
    bills.sim.behave("WATER01", "lost", bill_key="3100000004", times=1)
    serial = str((await bills.pay_online(card.resident_id, found, "k")).payment.serial)
    await bills.run()
    # Our day is still open, but the biller's own day for the payment is closed: it refuses
    # the reversal, and the refund that follows undoes the payment on our open day.
    bills.sim.behave("WATER01", "down")
    clock.advance(timedelta(minutes=16))
    await bills.run()
    reversing = await bills.payment(serial)
    assert reversing.status is PaymentStatus.reversing
    bills.sim.behave("WATER01", "normal")
    bills.sim.behave("WATER01", "after_cut", bill_key="3100000004", times=1)
    clock.advance(timedelta(seconds=30))
    assert await bills.run() == {"refunding": 1}
    refunding = await bills.payment(serial)
    assert (refunding.status, refunding.refund_serial) == (
        PaymentStatus.refunding, f"R{serial[1:]}"
    )  # fmt: skip
    assert await bills.run() == {"refunded": 1}
    refunded = await bills.payment(serial)
    day = await open_day(resources)
    assert (refunded.status, refunded.clearing_date) == (PaymentStatus.refunded, day)
    assert refunded.posted_date == refunded.refund_date == day
    assert refunded.refund_receipt_no
    assert bills.sim.payments()[serial]["state"] == "refunded"
    assert await bills.balance(*resident) == 100_000
    assert await bills.available(*resident) == 100_000
    assert await payable(bills) == 0
    # The day's file lists the payment and its refund, and the biller agrees with it.
    await clearing.close_through(resources.sessions, resources.settings, day)
    assert await file_of(resources, day) == (
        ReconStatus.sending, [(serial, "payment"), (str(refunded.refund_serial), "refund")]
    )  # fmt: skip
    (sent,) = [
        s
        for s in await recon.reconcile(resources.sessions, bills.client, "CITYCARD", day)
        if s.biller_code == "WATER01"
    ]
    assert sent.status is ReconStatus.agreed, sent.detail
