"""Paying bills end to end against the real biller-sim process: each of its behaviours, the
double submit, the outbox worker's steps and its crash points (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from cardsvc import clock
from cardsvc.bills import repository as repo
from cardsvc.bills import service, tasks
from cardsvc.bills.adapter import Answer, BillerClient, BillerEndpoint
from cardsvc.bills.models import PaymentStatus
from cardsvc.clearing import service as clearing
from cardsvc.errors import IdempotencyConflict
from cardsvc.jobs.worker import Job, run_forever
from cardsvc.ledger.models import AccountKind
from cardsvc.resources import Resources, Storage
from tests.billersim import SimControl
from tests.cardsvc.bills.paying import Bills, api_listening, biller_client, register_billers
from tests.factories import make_card

FIRST = "3100000001"


@pytest.fixture
async def bills(resources: Resources, paying_sim: SimControl) -> AsyncIterator[Bills]:
    await register_billers(resources, paying_sim.url)
    async with biller_client(resources) as client:
        yield Bills(resources, client, paying_sim)


async def _resident(resources: Resources, order: int = 1, money: int = 100_000) -> int:
    card = await make_card(resources, order, account=money, pin=None)
    return card.resident_id


def _acc(resident: int) -> tuple[AccountKind, str]:
    return AccountKind.resident_account, str(resident)


async def test_query_answers_are_told_apart(bills: Bills) -> None:
    found = await bills.query(FIRST)
    assert (found.amount_due, found.late_fee, found.period) == (12_850, 350, "202611")
    assert found.holder_masked == "张**"
    with pytest.raises(service.NoSuchCustomer):
        await bills.query("3100077777")
    with pytest.raises(service.NothingDue):
        await bills.query("3100099999")
    with pytest.raises(service.BillKeyInvalid):
        await bills.query("41000001")
    bills.sim.behave("WATER01", "down")
    with pytest.raises(service.BillerNotAnswering):
        await bills.query(FIRST)


async def test_paid_once_and_the_hold_posted(bills: Bills, resources: Resources) -> None:
    resident = await _resident(resources)
    found = await bills.query(FIRST)
    first = await bills.pay_online(resident, found, "k-1")
    again = await bills.pay_online(resident, found, "k-1")
    assert again.replayed
    assert again.payment.serial == first.payment.serial
    with pytest.raises(IdempotencyConflict):
        await bills.pay_online(resident, found, "k-1", amount=found.amount_due - 1)
    with pytest.raises(service.AlreadyPaying):
        await bills.pay_online(resident, found, "k-2")
    serial = str(first.payment.serial)
    assert await bills.available(*_acc(resident)) == 100_000 - found.amount_due
    assert await bills.balance(*_acc(resident)) == 100_000  # held, not posted
    await bills.run()
    paid = await bills.payment(serial)
    assert paid.status is PaymentStatus.paid
    assert paid.receipt_no
    assert await bills.balance(*_acc(resident)) == 100_000 - found.amount_due
    assert await bills.balance(AccountKind.biller_payable, "WATER01") == found.amount_due
    assert bills.sim.payments()[serial]["state"] == "success"
    assert await bills.outbox_depth() == 0


async def test_refusal_voids_the_hold(bills: Bills, resources: Resources) -> None:
    resident = await _resident(resources)
    bills.sim.behave("WATER01", "refuse")
    found = await bills.query(FIRST)
    serial = str((await bills.pay_online(resident, found, "k")).payment.serial)
    await bills.run()
    failed = await bills.payment(serial)
    assert (failed.status, failed.reason) == (PaymentStatus.failed, "refused")
    assert await bills.available(*_acc(resident)) == 100_000
    assert await bills.balance(AccountKind.biller_payable, "WATER01") == 0


@pytest.mark.settings(bills_timeout_seconds=0.3)
async def test_slow_answer_is_unknown_then_found_by_status(
    bills: Bills, resources: Resources
) -> None:
    resident = await _resident(resources)
    found = await bills.query(FIRST)
    bills.sim.behave("WATER01", "slow", delay_ms=1500, bill_key=FIRST, times=1)
    serial = str((await bills.pay_online(resident, found, "k")).payment.serial)
    await bills.run()
    unknown = await bills.payment(serial)
    assert (unknown.status, unknown.reason) == (PaymentStatus.unknown, "timeout")
    assert await bills.run() == {}  # the status query waits for its backoff
    clock.advance(timedelta(seconds=3))
    await bills.run()
    assert (await bills.payment(serial)).status is PaymentStatus.paid
    assert await bills.balance(AccountKind.biller_payable, "WATER01") == found.amount_due


async def test_answer_lost_after_processing_pays_once(bills: Bills, resources: Resources) -> None:
    resident = await _resident(resources)
    found = await bills.query(FIRST)
    bills.sim.behave("WATER01", "lost", bill_key=FIRST, times=1)
    serial = str((await bills.pay_online(resident, found, "k")).payment.serial)
    await bills.settle()
    paid = await bills.payment(serial)
    assert paid.status is PaymentStatus.paid
    assert bills.sim.payments()[serial]["receipt_no"] == paid.receipt_no
    assert await bills.balance(*_acc(resident)) == 100_000 - found.amount_due


async def test_bad_signature_is_no_answer(bills: Bills, resources: Resources) -> None:
    resident = await _resident(resources)
    found = await bills.query(FIRST)
    bills.sim.behave("WATER01", "bad_signature", bill_key=FIRST, times=1)
    serial = str((await bills.pay_online(resident, found, "k")).payment.serial)
    await bills.run()
    assert (await bills.payment(serial)).reason == "bad_answer"
    await bills.settle()
    assert (await bills.payment(serial)).status is PaymentStatus.paid


async def test_down_biller_is_reversed_after_15_minutes(bills: Bills, resources: Resources) -> None:
    resident = await _resident(resources)
    found = await bills.query(FIRST)
    bills.sim.behave("WATER01", "down")
    serial = str((await bills.pay_online(resident, found, "k")).payment.serial)
    for _ in range(12):
        await bills.run()
        clock.advance(timedelta(minutes=2))
    assert (await bills.payment(serial)).status is PaymentStatus.reversing
    bills.sim.behave("WATER01", "normal")
    await bills.settle()
    reversed_ = await bills.payment(serial)
    assert reversed_.status is PaymentStatus.reversed
    assert bills.sim.payments()[serial]["state"] == "reversed"
    assert await bills.available(*_acc(resident)) == 100_000


async def test_pending_then_callbacks_duplicated(
    bills: Bills, resources: Resources, callback_port: int
) -> None:
    resident = await _resident(resources)
    found = await bills.query(FIRST)
    bills.sim.behave("WATER01", "duplicate_callbacks", delay_ms=200, repeat=3, bill_key=FIRST)
    async with api_listening(resources, callback_port):
        serial = str((await bills.pay_online(resident, found, "k")).payment.serial)
        await bills.run()
        assert (await bills.payment(serial)).status is PaymentStatus.biller_pending
        for _ in range(100):
            if (await bills.payment(serial)).status is PaymentStatus.paid:
                break
            await asyncio.sleep(0.05)
        for _ in range(200):
            acked = {c["key"] for c in bills.sim.state()["callbacks"] if c["status"] == 200}
            if len(acked) >= 3:
                break
            await asyncio.sleep(0.05)
    # Three callbacks, each acknowledged (a copy that met a busy database was answered 503
    # and sent again, as the protocol says).
    callbacks = bills.sim.state()["callbacks"]
    assert len({c["key"] for c in callbacks}) == 3
    assert {c["key"] for c in callbacks if c["status"] == 200} == {c["key"] for c in callbacks}
    paid = await bills.payment(serial)
    assert paid.status is PaymentStatus.paid
    assert await bills.balance(AccountKind.biller_payable, "WATER01") == found.amount_due
    assert await bills.outbox_depth() == 0


async def test_pending_without_callback_is_found_by_status(
    bills: Bills, resources: Resources
) -> None:
    resident = await _resident(resources)
    found = await bills.query(FIRST)
    bills.sim.behave("WATER01", "pending", delay_ms=300, bill_key=FIRST)
    serial = str((await bills.pay_online(resident, found, "k")).payment.serial)
    await bills.run()
    assert (await bills.payment(serial)).status is PaymentStatus.biller_pending
    await asyncio.sleep(0.5)  # the simulator decides (its callback finds no one listening)
    await bills.settle()
    assert (await bills.payment(serial)).status is PaymentStatus.paid


@pytest.mark.parametrize("crash_at", tasks.CRASH_POINTS)
async def test_crash_points_resume_without_double_payment(
    bills: Bills, resources: Resources, crash_at: str
) -> None:
    resident = await _resident(resources)
    found = await bills.query(FIRST)
    serial = str((await bills.pay_online(resident, found, "k")).payment.serial)
    with pytest.raises(tasks.Crashed):
        await bills.run(crash_at=crash_at, owner="dead-worker")
    assert (await bills.payment(serial)).status is PaymentStatus.pending
    assert await bills.run(owner="next-worker") == {}  # the dead worker's lease still holds
    clock.advance(timedelta(seconds=tasks._lease_seconds(resources.settings) + 1))
    await bills.run(owner="next-worker")
    paid = await bills.payment(serial)
    assert paid.status is PaymentStatus.paid
    sim_payment = bills.sim.payments()[serial]
    assert sim_payment["receipt_no"] == paid.receipt_no
    assert len(bills.sim.payments()) == 1
    assert await bills.balance(*_acc(resident)) == 100_000 - found.amount_due
    assert await bills.balance(AccountKind.biller_payable, "WATER01") == found.amount_due


async def test_never_received_is_reversed_at_once(bills: Bills, resources: Resources) -> None:
    resident = await _resident(resources)
    found = await bills.query(FIRST)
    bills.sim.behave("WATER01", "down", times=2)
    serial = str((await bills.pay_online(resident, found, "k")).payment.serial)
    await bills.settle()
    reversed_ = await bills.payment(serial)
    assert (reversed_.status, reversed_.reason) == (PaymentStatus.reversed, "no_answer")
    assert bills.sim.payments()[serial]["was"] == "unknown_serial"
    assert await bills.available(*_acc(resident)) == 100_000


async def test_unknown_past_the_cut_is_refunded(bills: Bills, resources: Resources) -> None:
    resident = await _resident(resources)
    found = await bills.query(FIRST)
    bills.sim.behave("WATER01", "lost", bill_key=FIRST, times=1)
    serial = str((await bills.pay_online(resident, found, "k")).payment.serial)
    await bills.run()
    unknown = await bills.payment(serial)
    assert unknown.status is PaymentStatus.unknown
    bills.sim.behave("WATER01", "down")
    await clearing.close_through(resources.sessions, resources.settings, unknown.clearing_date)
    clock.advance(timedelta(minutes=16))
    await bills.run()
    assert (await bills.payment(serial)).status is PaymentStatus.refunding
    bills.sim.behave("WATER01", "normal")
    await bills.settle()
    refunded = await bills.payment(serial)
    assert refunded.status is PaymentStatus.refunded
    assert refunded.refund_serial == f"R{serial[1:]}"
    assert refunded.refund_receipt_no
    assert refunded.posted_date == refunded.refund_date != refunded.clearing_date
    assert bills.sim.payments()[serial]["state"] == "refunded"
    assert await bills.balance(*_acc(resident)) == 100_000
    assert await bills.available(*_acc(resident)) == 100_000
    assert await bills.balance(AccountKind.biller_payable, "WATER01") == 0


async def test_pending_for_24_hours_is_reversed(bills: Bills, resources: Resources) -> None:
    resident = await _resident(resources)
    found = await bills.query(FIRST)
    bills.sim.behave("WATER01", "pending", delay_ms=600_000, bill_key=FIRST)
    serial = str((await bills.pay_online(resident, found, "k")).payment.serial)
    await bills.run()
    clock.advance(timedelta(hours=23))
    await bills.run()
    assert (await bills.payment(serial)).status is PaymentStatus.biller_pending
    clock.advance(timedelta(hours=1, seconds=1))
    await bills.settle()
    reversed_ = await bills.payment(serial)
    assert reversed_.status is PaymentStatus.reversed
    assert bills.sim.payments()[serial]["state"] == "reversed"
    assert await bills.available(*_acc(resident)) == 100_000


async def test_metrics_count_outcomes_and_the_outbox(bills: Bills, resources: Resources) -> None:
    before = (
        REGISTRY.get_sample_value(
            "cardsvc_bill_payments_total", {"biller": "WATER01", "outcome": "paid"}
        )
        or 0.0
    )
    resident = await _resident(resources)
    found = await bills.query(FIRST)
    await bills.pay_online(resident, found, "k")
    async with resources.sessions() as session:
        assert await tasks.observe_outbox(session, clock.now()) == 1
    assert REGISTRY.get_sample_value("cardsvc_bill_outbox_depth") == 1
    await bills.run()
    assert REGISTRY.get_sample_value("cardsvc_bill_outbox_depth") == 0
    assert REGISTRY.get_sample_value("cardsvc_bill_outbox_oldest_seconds") == 0
    after = REGISTRY.get_sample_value(
        "cardsvc_bill_payments_total", {"biller": "WATER01", "outcome": "paid"}
    )
    assert after == before + 1
    assert (REGISTRY.get_sample_value(
        "cardsvc_biller_latency_seconds_count", {"biller": "WATER01", "request": "pay"}
    ) or 0) >= 1  # fmt: skip


class Counting(BillerClient):
    """The real client, counting the requests it has in flight at once."""

    def __init__(self, inner: BillerClient) -> None:
        super().__init__(inner.http, inner.hsm, inner.channel, inner.timeout)
        self.in_flight = self.peak = 0

    async def call(
        self, biller: BillerEndpoint, path: str, key: str, payload: dict[str, Any]
    ) -> Answer:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await super().call(biller, path, key, payload)
        finally:
            self.in_flight -= 1


async def _pay_twelve(bills: Bills, resources: Resources) -> list[str]:
    resident = await _resident(resources, money=1_000_000)
    serials = []
    for n in range(1, 13):
        found = await bills.query(f"31000{n:05d}")
        serials.append(str((await bills.pay_online(resident, found, f"k{n}")).payment.serial))
    return serials


@pytest.mark.settings(bills_outbox_concurrency=4)
async def test_a_lease_is_sent_concurrently_within_the_bound(
    bills: Bills, resources: Resources
) -> None:
    serials = await _pay_twelve(bills, resources)
    bills.sim.behave("WATER01", "slow", delay_ms=100)
    counting = Counting(bills.client)
    counts = await tasks.run_outbox(
        resources.sessions, resources.settings, counting, clock.now(), owner="w"
    )
    assert counts == {"paid": 12}
    assert counting.peak == 4  # twelve rows, four at a time
    for serial in serials:
        assert (await bills.payment(serial)).status is PaymentStatus.paid
    assert await bills.outbox_depth() == 0


@pytest.mark.settings(bills_outbox_concurrency=8, bills_outbox_batch=6)
async def test_two_concurrent_workers_pay_each_serial_once(
    bills: Bills, resources: Resources
) -> None:
    serials = await _pay_twelve(bills, resources)
    bills.sim.behave("WATER01", "slow", delay_ms=50)
    runs = await asyncio.gather(bills.run(owner="a"), bills.run(owner="b"))
    assert [r.get("paid") for r in runs] == [6, 6]  # each leased its own six
    sent = bills.sim.payments()
    assert sorted(sent) == sorted(serials)
    for serial in serials:
        paid = await bills.payment(serial)
        assert (paid.status, paid.receipt_no) == (PaymentStatus.paid, sent[serial]["receipt_no"])
    stats = bills.sim.stats()
    assert stats["answer:/bills/payments:200"] == 12  # no serial sent twice
    assert await bills.balance(AccountKind.biller_payable, "WATER01") == 12 * 12_850


async def test_a_committed_payment_wakes_the_listening_worker(
    bills: Bills, resources: Resources
) -> None:
    if resources.settings.is_sqlite:
        pytest.skip("a commit notifies the worker on PostgreSQL; SQLite waits for its interval")
    runs: list[dict[str, int]] = []

    async def run(storage: Storage, now: datetime) -> str:
        runs.append(await tasks.run_outbox(storage.sessions, storage.settings, bills.client, now))
        return "ran"

    # Hourly: only the notification can run it again within the test.
    job = Job("bill-outbox-woken", lambda _s: 3600.0, run, wake_on=repo.OUTBOX_CHANNEL)
    stop = asyncio.Event()
    loop = asyncio.create_task(run_forever(resources, [job], stop))
    try:
        for _ in range(100):
            if runs:
                break
            await asyncio.sleep(0.05)
        assert runs == [{}]  # the run at start (which also took the listener's first wake-up)
        resident = await _resident(resources)
        found = await bills.query(FIRST)
        serial = str((await bills.pay_online(resident, found, "k")).payment.serial)
        for _ in range(200):
            if (await bills.payment(serial)).status is PaymentStatus.paid:
                break
            await asyncio.sleep(0.05)
        assert (await bills.payment(serial)).status is PaymentStatus.paid
    finally:
        stop.set()
        await asyncio.wait_for(loop, timeout=10)
