"""Stateful property test of bill payments (hypothesis ``RuleBasedStateMachine``) against the
real biller-sim process: payments from one resident's online account, interleaved with double
submits, biller behaviours (refusal, slow past the timeout, answer lost, pending then decided,
down), the worker's passes, time passing (status backoff, the 15-minute reversal) and day cuts
(which turn reversals into refunds). After every step:

- money is conserved: the resident's account + the biller's payable + bill suspense hold what
  the account was funded with, and the ledger's invariants hold;
- what is available is the funding less the payments in flight and the payments paid;
- a paid payment is the biller's success with the same receipt, and the payable holds exactly
  the paid payments; a failed or reversed one is no success at the biller;
- a double submit answers the first payment.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import text

from cardsvc import clock
from cardsvc.bills import repository as repo
from cardsvc.bills import service
from cardsvc.bills.adapter import BillerClient, biller_http
from cardsvc.bills.models import PaymentStatus
from cardsvc.cache import MemoryCache
from cardsvc.clearing import service as clearing
from cardsvc.db import (
    create_engine,
    import_all_models,
    metadata,
    session_factory,
    unit_of_work,
)
from cardsvc.hsm.connect import connect_hsm
from cardsvc.ledger import service as ledger
from cardsvc.ledger.errors import InsufficientFunds
from cardsvc.ledger.models import AccountKind
from cardsvc.ledger.schemas import AccountRef
from cardsvc.resources import Resources
from cardsvc.settings import Mode, Settings
from tests.billersim import SimControl
from tests.cardsvc.bills.paying import Bills, register_billers
from tests.factories import make_card

FUNDED = 100_000
START = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
MODES = st.sampled_from(["normal", "refuse", "slow", "lost", "lost", "pending"])


class BillMoney(RuleBasedStateMachine):
    database_url: str = ""
    template: Path | None = None
    workdir: Path | None = None
    sim_url: str = ""

    def __init__(self) -> None:
        super().__init__()
        clock.set_time(START)
        self.loop = asyncio.new_event_loop()
        self.next_key = 1
        self.submits: list[tuple[str, service.Presented, str]] = []  # (key, presented, serial)
        self.run(self._open())

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def _open(self) -> None:
        url = self.database_url
        if url.startswith("sqlite"):
            assert self.template is not None
            assert self.workdir is not None
            path = self.workdir / f"{uuid.uuid4().hex}.db"
            shutil.copyfile(self.template, path)
            url = f"sqlite+aiosqlite:///{path}"
        self.engine = create_engine(url, pool_size=4)
        if self.engine.dialect.name == "postgresql":
            import_all_models()
            names = ", ".join(t.name for t in metadata.sorted_tables)
            async with self.engine.begin() as conn:
                await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        settings_ = Settings(
            mode=Mode.development, database_url=url, hsm_url="local://dev",
            bills_timeout_seconds=0.3,
        )  # fmt: skip
        self.hsm = await connect_hsm("local://dev")
        self.resources = Resources(
            settings=settings_, engine=self.engine, sessions=session_factory(self.engine),
            cache=MemoryCache(), hsm=self.hsm,
        )  # fmt: skip
        self.sim = SimControl(self.sim_url)
        self.sim.reset()
        await register_billers(self.resources, self.sim_url)
        self.http = biller_http()
        client = BillerClient(self.http, self.hsm, "CITYCARD", 0.3)
        self.bills = Bills(self.resources, client, self.sim)
        self.resident = (await make_card(self.resources, 31, account=FUNDED, pin=None)).resident_id

    def teardown(self) -> None:
        self.sim.reset()
        self.run(self.http.aclose())
        self.run(self.hsm.close())
        self.run(self.engine.dispose())
        self.loop.close()
        clock.reset()

    # --- rules ---------------------------------------------------------------------------

    @rule(mode=MODES)
    def pay(self, mode: str) -> None:
        bill_key = f"31000{self.next_key:05d}"
        self.next_key += 1
        try:
            presented = self.run(self.bills.query(bill_key))
        except service.BillerNotAnswering:  # the biller is down for now
            return
        if mode in ("slow", "lost"):
            self.sim.behave("WATER01", mode, delay_ms=600, bill_key=bill_key, times=1)
        elif mode == "pending":
            self.sim.behave("WATER01", "pending", delay_ms=100, bill_key=bill_key)
        elif mode != "normal":
            self.sim.behave("WATER01", mode, bill_key=bill_key)
        key = f"k-{bill_key}"
        try:
            made = self.run(self.bills.pay_online(self.resident, presented, key))
        except InsufficientFunds:  # the one refusal a funded payment may meet
            return
        assert not made.replayed
        self.submits.append((key, presented, str(made.payment.serial)))

    @precondition(lambda self: bool(self.submits))
    @rule(data=st.data())
    def double_submit(self, data: st.DataObject) -> None:
        key, presented, serial = data.draw(st.sampled_from(self.submits))
        again = self.run(self.bills.pay_online(self.resident, presented, key))
        assert again.replayed
        assert again.payment.serial == serial

    @rule(minutes=st.sampled_from([1, 5, 20]))
    def outage(self, minutes: int) -> None:
        """The biller is down for a while, the worker trying every minute; then back."""
        self.sim.behave("WATER01", "down")
        for _ in range(minutes):
            clock.advance(timedelta(minutes=1))
            self.run(self.bills.run())
        self.sim.behave("WATER01", "normal")

    @rule()
    def worker(self) -> None:
        self.run(self.bills.run())

    @rule(seconds=st.sampled_from([3, 30, 300, 1000]))
    def time_passes(self, seconds: int) -> None:
        """Time passes while the worker runs (its next pass is due)."""
        clock.advance(timedelta(seconds=seconds))
        self.run(self.bills.run())

    @rule()
    def day_cut(self) -> None:
        async def cut() -> None:
            async with unit_of_work(self.resources.sessions) as session:
                day = await clearing.clearing_date(session, self.resources.settings)
            await clearing.close_through(self.resources.sessions, self.resources.settings, day)

        self.run(cut())

    # --- invariants ------------------------------------------------------------------------

    async def _books(self) -> dict[str, Any]:
        async with self.resources.sessions() as session:
            account = AccountRef(AccountKind.resident_account, str(self.resident))
            payments = [await repo.payment_by_serial(session, s) for _, _, s in self.submits]
            return {
                "balance": await ledger.balance(session, account),
                "available": await ledger.available(session, account),
                "payable": await ledger.balance(session, service.payable("WATER01")),
                "suspense": await ledger.balance(
                    session, AccountRef(AccountKind.bill_suspense, "")
                ),
                "report": await ledger.check_invariants(session),
                "payments": payments,
            }

    @invariant()
    def money_is_conserved(self) -> None:
        books = self.run(self._books())
        assert books["report"].ok, books["report"].render()
        assert books["balance"] + books["payable"] + books["suspense"] == FUNDED
        payments = books["payments"]
        in_flight = sum(p.amount for p in payments if not p.status.final)
        paid = sum(p.amount for p in payments if p.status is PaymentStatus.paid)
        assert books["payable"] == paid
        assert books["available"] == FUNDED - paid - in_flight
        at_biller = self.sim.payments()
        for p in payments:
            theirs = at_biller.get(str(p.serial))
            if p.status is PaymentStatus.paid:
                assert theirs is not None
                assert (theirs["state"], theirs["receipt_no"]) == ("success", p.receipt_no)
            elif p.status.final:
                assert theirs is None or theirs["state"] != "success", (p.status, theirs)


BillMoney.TestCase.settings = settings(
    max_examples=6,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.slow
def test_bill_money_is_conserved(
    database_url: str, sqlite_template: Path, tmp_path: Path, paying_sim_url: str
) -> None:
    BillMoney.database_url = database_url
    BillMoney.template = sqlite_template
    BillMoney.workdir = tmp_path
    BillMoney.sim_url = paying_sim_url
    BillMoney.TestCase().runTest()
