"""The payments' outbox: a due row is leased by one worker at a time, and a lease that ran out
is taken again (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.bills import repository as repo
from cardsvc.bills import service
from cardsvc.bills.models import OutboxAction, PayerKind, PaymentStatus, SubChannel
from cardsvc.bills.schemas import BankDetails, BillerIn
from cardsvc.db import unit_of_work


async def _payments(sessions: async_sessionmaker[AsyncSession], n: int) -> list[int]:
    now = clock.now()
    async with unit_of_work(sessions) as session:
        biller = await service.create_biller(
            session,
            BillerIn(
                code="WATER01", name="水", category="water", endpoint="http://127.0.0.1:9",
                key_label="BILLER_WATER01", bill_key_pattern="31[0-9]{8}",
                bank=BankDetails(bank_name="b", account_no="62220000111122", account_name="w"),
            ),
            actor="test",
        )  # fmt: skip
        ids = []
        for i in range(n):
            payment = await repo.insert_payment(
                session,
                sub_channel=SubChannel.counter, biller_id=biller.id, biller_code="WATER01",
                bill_key=f"31000{i:05d}", reference=f"P-{i}", bill_id=f"B-{i}",
                amount_due=100, amount=100, payer_kind=PayerKind.counter_cash,
                counter_code="C001", clearing_date=now.date(), paid_at=now,
                status=PaymentStatus.pending, submit_scope="counter:C001",
                submit_key=f"k{i}", request_hash="0" * 64, created_at=now, updated_at=now,
            )  # fmt: skip
            assert payment is not None
            await repo.add_outbox(session, payment.id, OutboxAction.pay, now)
            ids.append(payment.id)
            assert payment.serial == f"B{payment.id:011d}"
    return ids


async def test_two_workers_never_lease_one_row(sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = await _payments(sessions, 6)
    now = clock.now() + timedelta(seconds=1)

    async def lease(owner: str) -> list[int]:
        async with unit_of_work(sessions) as session:
            return await repo.lease_outbox(
                session, now=now, owner=owner, until=now + timedelta(seconds=30), limit=4
            )

    first, second = await asyncio.gather(lease("a"), lease("b"))
    assert not set(first) & set(second)
    assert sorted(first + second) == ids
    assert await lease("c") == []  # every row is leased
    later = now + timedelta(seconds=31)
    async with unit_of_work(sessions) as session:
        taken = await repo.lease_outbox(
            session, now=later, owner="c", until=later + timedelta(seconds=30), limit=10
        )
        depth, oldest = await repo.outbox_depth(session)
    assert sorted(taken) == ids  # the expired leases are free again
    assert depth == 6
    assert oldest is not None
    assert oldest <= now
