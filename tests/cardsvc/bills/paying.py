"""Helpers of the payment tests: billers registered against the simulator, residents with
money, the outbox worker run in process, and the sums the ledger must conserve."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from cardsvc import clock
from cardsvc.app import create_app
from cardsvc.bills import repository as repo
from cardsvc.bills import service, tasks
from cardsvc.bills.adapter import BillerClient, biller_http
from cardsvc.bills.models import BillPayment
from cardsvc.bills.schemas import BankDetails, BillerIn
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.ledger.schemas import AccountRef
from cardsvc.resources import Resources
from tests.billersim import GAS_KEY, WATER_KEY, SimControl


@dataclass
class Bills:
    resources: Resources
    client: BillerClient
    sim: SimControl

    async def query(self, bill_key: str, biller: str = "WATER01") -> service.Presented:
        return await service.query_bill(
            self.resources.sessions, self.client, biller, bill_key, None
        )

    async def pay_online(
        self, resident_id: int, presented: service.Presented, key: str, amount: int | None = None
    ) -> service.PaymentView:
        async with unit_of_work(self.resources.sessions) as session:
            return await service.pay_from_account(
                session, self.resources.settings, resident_id,
                biller_code=presented.biller_code, reference=presented.reference,
                amount=amount, key=key,
            )  # fmt: skip

    async def run(self, **options: Any) -> dict[str, int]:
        return await tasks.run_outbox(
            self.resources.sessions, self.resources.settings, self.client, clock.now(), **options
        )

    async def payment(self, serial: str) -> BillPayment:
        async with self.resources.sessions() as session:
            found = await repo.payment_by_serial(session, serial)
            assert found is not None
            return found

    async def balance(self, kind: AccountKind, owner: str) -> int:
        async with self.resources.sessions() as session:
            return await ledger.balance(session, AccountRef(kind, owner))

    async def available(self, kind: AccountKind, owner: str) -> int:
        async with self.resources.sessions() as session:
            return await ledger.available(session, AccountRef(kind, owner))

    async def outbox_depth(self) -> int:
        async with self.resources.sessions() as session:
            return (await repo.outbox_depth(session))[0]

    async def settle(self, rounds: int = 40) -> dict[str, int]:
        """Run the worker, moving the clock past each backoff, until the outbox is empty."""
        seen: dict[str, int] = {}
        for _ in range(rounds):
            if await self.outbox_depth() == 0:
                break
            for name, count in (await self.run()).items():
                seen[name] = seen.get(name, 0) + count
            clock.advance(tasks.backoff(9))
        return seen


async def register_billers(resources: Resources, sim_url: str) -> None:
    hsm = resources.hsm
    await hsm.key_import("BILLER_WATER01", "biller-mac", WATER_KEY, "HMAC-SHA256")
    await hsm.key_import("BILLER_GAS01", "biller-mac", GAS_KEY, "HMAC-SHA256")
    bank = BankDetails(bank_name="城市银行", account_no="6222000011112222", account_name="公司")
    async with unit_of_work(resources.sessions) as session:
        for code, pattern in (("WATER01", "31[0-9]{8}"), ("GAS01", "G[0-9]{7}")):
            await service.create_biller(
                session,
                BillerIn(
                    code=code, name=code, category="water" if code == "WATER01" else "gas",
                    endpoint=sim_url, key_label=f"BILLER_{code}", bill_key_pattern=pattern,
                    bank=bank,
                ),
                actor="test",
            )  # fmt: skip


@asynccontextmanager
async def biller_client(resources: Resources) -> AsyncIterator[BillerClient]:
    settings = resources.settings
    async with biller_http() as http:
        yield BillerClient(
            http, resources.hsm, settings.bills_channel_id, settings.bills_timeout_seconds
        )


@asynccontextmanager
async def api_listening(resources: Resources, port: int) -> AsyncIterator[str]:
    """The API on a real port (the simulator's callbacks need one), in this event loop. As
    ``cardsvc serve`` does, uvicorn configures no logging (no log config, no level): a level it
    set on its loggers would outlive the server in this process and hide their lines from the
    tests that come after (tests/cardsvc/test_logging.py)."""
    config = uvicorn.Config(
        create_app(resources.settings, resources), host="127.0.0.1", port=port,
        log_config=None, log_level=None, lifespan="on",
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
