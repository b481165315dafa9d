"""A carried batch (refunds above the sales, fees above the gross) is carried forward: the
merchant's next due batch settles it with its own posting, and the payout after pays the net of
both; a day whose carry leaves nothing to pay is carried further, never paid negative."""

from __future__ import annotations

from datetime import date, timedelta

import httpx
from sqlalchemy import select

from cardsvc.clearing import service as clearing
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, LedgerTransaction, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.resources import Resources
from settlement.fees import service as fees
from settlement.fees.schemas import FeeRuleCreate
from settlement.nightly import service as nightly
from settlement.nightly.models import BatchStatus, SettlementBatch
from settlement.payouts.models import PayoutStatus
from tests.settlement.helpers import books, ride_day
from tests.settlement.payouts.test_payouts import BANK, bank_balance, payouts_of, set_payee
from tests.terminals.helpers import BUS_MERCHANT, World


async def refund(resources: Resources, key: str, amount: int) -> date:
    """An online refund of ``amount`` fen out of the bus company's pending account, on the open
    day; returns that day."""
    async with unit_of_work(resources.sessions) as session:
        day = await clearing.clearing_date(session, resources.settings)
        pending = AccountRef(AccountKind.merchant_pending, BUS_MERCHANT)
        bank = AccountRef(AccountKind.bank, "test")
        await ledger.post(
            session,
            PostingRequest(
                idempotency_key=key, tx_type="online_refund", clearing_date=day,
                entries=[Entry(pending, Side.debit, amount), Entry(bank, Side.credit, amount)],
            ),
        )  # fmt: skip
    return day


async def batches(resources: Resources) -> dict[date, tuple[BatchStatus, int, int, str | None]]:
    b = SettlementBatch
    async with resources.sessions() as session:
        rows = await session.execute(
            select(b.clearing_date, b.status, b.gross, b.net, b.payout_reference).where(
                b.merchant_no == BUS_MERCHANT
            )
        )
        return {d: (s, g, n, r) for d, s, g, n, r in rows.all()}


async def settle(resources: Resources, day: date) -> None:
    await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)


async def test_a_refund_only_day_is_taken_off_the_next_payout(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    await set_payee(resources, BUS_MERCHANT, **BANK)
    first = await refund(resources, "test:refund:1", 700)
    async with unit_of_work(resources.sessions) as session:
        rule = {"merchant_no": BUS_MERCHANT, "effective_from": first, "per_record": 7}
        await fees.add_rule(session, FeeRuleCreate.model_validate(rule), actor="test")
    await settle(resources, first)
    assert (await batches(resources))[first] == (BatchStatus.carried, -700, -700, None)
    assert BUS_MERCHANT not in await payouts_of(resources, first)  # nothing paid, nothing negative
    assert (await books(resources)).pending[BUS_MERCHANT] == -700

    second = await ride_day(client, world, resources)
    assert second == first + timedelta(days=1)
    await settle(resources, second)
    found = await batches(resources)
    _status, gross, net, _ref = found[second]
    reference = f"P{second:%Y%m%d}{BUS_MERCHANT}"
    assert found[second][0] is BatchStatus.posted
    assert found[first] == (BatchStatus.carried, -700, -700, reference)  # settled with it
    fee = gross - net
    assert fee > 0  # the rule charged the sales day
    paid = gross - 700 - fee  # sales - refunds - fees
    assert paid > 0
    assert await payouts_of(resources, second) == {
        BUS_MERCHANT: (PayoutStatus.issued, paid),
        **{m: v for m, v in (await payouts_of(resources, second)).items() if m != BUS_MERCHANT},
    }
    after = await books(resources)
    assert after.pending[BUS_MERCHANT] == 0  # the refund day is cleared
    assert after.payable[BUS_MERCHANT] == 0
    assert after.fee_income == fee
    async with resources.sessions() as session:
        assert (await ledger.check_invariants(session)).ok
        assert await nightly.money_problems(session, first) == []
        assert await nightly.money_problems(session, second) == []
    bank = await bank_balance(resources)

    # Reruns of both days (files again) post nothing twice.
    async with resources.sessions() as session:
        count = len((await session.execute(select(LedgerTransaction.id))).all())
    await settle(resources, first)
    await settle(resources, second)
    async with resources.sessions() as session:
        assert len((await session.execute(select(LedgerTransaction.id))).all()) == count
    assert await bank_balance(resources) == bank
    assert (await books(resources)) == after


async def test_a_carry_larger_than_the_next_day_is_carried_further(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    await set_payee(resources, BUS_MERCHANT, **BANK)
    first = await refund(resources, "test:refund:big", 1_000_000)
    await settle(resources, first)
    second = await ride_day(client, world, resources)
    await settle(resources, second)
    found = await batches(resources)
    assert found[second][0] is BatchStatus.carried  # its sales do not cover the refund
    assert found[first][3] is None
    assert found[second][3] is None
    assert BUS_MERCHANT not in await payouts_of(resources, second)
    after = await books(resources)
    assert after.payable[BUS_MERCHANT] == 0
    assert after.pending[BUS_MERCHANT] == found[first][1] + found[second][1]  # still carried
    async with resources.sessions() as session:
        assert (await ledger.check_invariants(session)).ok
        assert await nightly.money_problems(session, second) == []
