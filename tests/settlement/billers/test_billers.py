"""Billers settle in the nightly run like merchants: the day's movement of each biller's
payable, the fee of each payment by the biller's rule, a fee posting, a payout on the biller's
cycle with its line in the bank file, ``billers.csv`` for finance, and the day's money check
covering it all."""

from __future__ import annotations

from datetime import date, timedelta

import httpx
import pytest
from sqlalchemy import select, update

from cardsvc.bills import service as bills
from cardsvc.bills.schemas import BillerIn
from cardsvc.clearing import service as clearing
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from settlement.billers.models import BillerBatch
from settlement.nightly import service as nightly
from settlement.nightly.models import BatchStatus
from settlement.payouts import service as payouts
from settlement.payouts.models import PayeeKind, PayoutStatus, SettlementPayout
from tests.factories import staff_headers
from tests.settlement.helpers import day_files

RESIDENT = "7"
WATER_BANK = {"bank_name": "城市银行", "account_no": "62220000123456", "account_name": "城市水务"}


async def register(
    resources: Resources, code: str, *, fixed: int = 0, bps: int = 0, cap: int = 0,
    cycle: str = "daily",
) -> None:  # fmt: skip
    body = BillerIn.model_validate({
        "code": code, "name": f"{code} 公司", "category": "water",
        "endpoint": "http://127.0.0.1:9/b", "key_label": f"BILLER_{code}",
        "bill_key_pattern": r"31[0-9]{8}", "bank": WATER_BANK,
        "fee": {"fixed": fixed, "bps": bps, "max": cap}, "settlement_cycle": cycle,
    })  # fmt: skip
    async with resources.sessions() as session:
        await bills.create_biller(session, body, actor="t")
        await session.commit()


async def move(resources: Resources, key: str, code: str, amount: int) -> date:
    """A bill payment (amount > 0: the resident's account to the biller's payable) or a refund
    (amount < 0: back), as the payments post them, on the open day; the resident's account is
    funded first. Returns the clearing date it landed on."""
    async with resources.sessions() as session:
        day = await clearing.clearing_date(session, resources.settings)
        resident = AccountRef(AccountKind.resident_account, RESIDENT)
        payable = AccountRef(AccountKind.biller_payable, code)
        if amount > 0:
            await ledger.post(session, PostingRequest(
                f"deposit:T:{key}", "deposit", day,
                [Entry(AccountRef(AccountKind.counter_cash, "C1"), Side.debit, amount),
                 Entry(resident, Side.credit, amount)]))  # fmt: skip
            entries = [Entry(resident, Side.debit, amount), Entry(payable, Side.credit, amount)]
        else:
            entries = [Entry(payable, Side.debit, -amount), Entry(resident, Side.credit, -amount)]
        await ledger.post(session, PostingRequest(f"bill:{key}", "bill_payment", day, entries))
        await session.commit()
    return day


async def settle(resources: Resources, day: date) -> nightly.RunResult:
    return await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)


async def balance(resources: Resources, kind: AccountKind, owner: str = "") -> int:
    async with resources.sessions() as session:
        return await ledger.balance(session, AccountRef(kind, owner))


async def batches(resources: Resources) -> dict[tuple[date, str], tuple[int, int, int, str]]:
    async with resources.sessions() as session:
        rows = (await session.execute(select(BillerBatch))).scalars().all()
        return {(b.clearing_date, b.biller_code): (b.gross, b.fee, b.net, b.status.value)
                for b in rows}  # fmt: skip


def fee(amount: int, fixed: int, bps: int, cap: int) -> int:
    """The rule of docs/bills.md §1, written out once more for the test."""
    charged = fixed + amount * bps // 10_000
    if cap:
        charged = min(charged, cap)
    return min(charged, amount)


async def test_a_daily_biller_is_paid_its_day_less_the_fee_of_each_payment(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    await register(resources, "WATER01", fixed=10, bps=25, cap=200)
    await register(resources, "GAS01", bps=100)  # no cap
    amounts = {"WATER01": [12_850, 5, 1_000_000], "GAS01": [8_000, 99]}
    day = None
    for code, paid in amounts.items():
        for n, amount in enumerate(paid):
            day = await move(resources, f"{code}-{n}", code, amount)
    assert day is not None
    result = await settle(resources, day)
    assert result.status.value == "settled"
    water_fee = sum(fee(a, 10, 25, 200) for a in amounts["WATER01"])
    gas_fee = sum(fee(a, 0, 100, 0) for a in amounts["GAS01"])
    gross = {c: sum(a) for c, a in amounts.items()}
    assert await batches(resources) == {
        (day, "GAS01"): (gross["GAS01"], gas_fee, gross["GAS01"] - gas_fee, "posted"),
        (day, "WATER01"): (gross["WATER01"], water_fee, gross["WATER01"] - water_fee, "posted"),
    }
    # The fees went to fee income, the rest to the bank; each payable is empty.
    assert await balance(resources, AccountKind.fee_income) == water_fee + gas_fee
    for code in amounts:
        assert await balance(resources, AccountKind.biller_payable, code) == 0
    async with resources.sessions() as session:
        paid_out = {p.reference: (p.payee_kind, p.merchant_name, p.amount, p.status,
                                  p.account_no)
                    for p in await payouts.day_payouts(session, day)}  # fmt: skip
        report = await ledger.check_invariants(session)
    assert paid_out == {
        f"B{day:%Y%m%d}GAS01": (PayeeKind.biller, "GAS01 公司", gross["GAS01"] - gas_fee,
                                PayoutStatus.issued, WATER_BANK["account_no"]),
        f"B{day:%Y%m%d}WATER01": (PayeeKind.biller, "WATER01 公司",
                                  gross["WATER01"] - water_fee, PayoutStatus.issued,
                                  WATER_BANK["account_no"]),
    }  # fmt: skip
    assert report.ok, report.render()
    # The bank file and billers.csv carry them; a rerun writes the same bytes.
    files = day_files(resources.settings.settlement_root, day)
    bank = files[f"bank-{day:%Y%m%d}.csv"].decode().split("\r\n")
    assert bank[1].startswith(f"B{day:%Y%m%d}GAS01,")
    assert bank[1].endswith(",,GAS01")  # no merchant number, the biller code
    assert bank[3].startswith("TOTAL,2,")
    listed = files["billers.csv"].decode("utf-8-sig").split("\r\n")
    assert listed[0] == "biller_code,biller_name,count,payments,gross,fee,net,status"
    water_net = gross["WATER01"] - water_fee
    assert listed[2] == (
        f"WATER01,WATER01 公司,3,3,{gross['WATER01'] / 100:.2f},{water_fee / 100:.2f},"
        f"{water_net // 100}.{water_net % 100:02d},posted"
    )
    await settle(resources, day)
    assert day_files(resources.settings.settlement_root, day) == files
    # Finance sees them among the day's payouts.
    finance = await staff_headers(client, "fin1", Role.finance)
    listed_api = await client.get(
        "/api/v1/settlement/payouts", params={"date": day.isoformat()}, headers=finance
    )
    assert listed_api.status_code == 200
    assert [(p["payee_kind"], p["merchant_no"], p["status"]) for p in listed_api.json()] == [
        ("biller", "GAS01", "issued"), ("biller", "WATER01", "issued")
    ]  # fmt: skip


async def test_a_weekly_biller_is_paid_on_sunday_and_a_monthly_one_on_the_last_day(
    resources: Resources,
) -> None:
    await register(resources, "WEEKLY", fixed=1, cycle="weekly")
    await register(resources, "MONTHLY", fixed=1, cycle="monthly")
    owed = {"WEEKLY": 0, "MONTHLY": 0}
    seen_sunday = seen_last = False
    for n in range(40):
        day = await move(resources, f"w{n}", "WEEKLY", 1_000 + n)
        await move(resources, f"m{n}", "MONTHLY", 2_000 + n)
        owed["WEEKLY"] += 1_000 + n - 1
        owed["MONTHLY"] += 2_000 + n - 1
        await settle(resources, day)
        async with resources.sessions() as session:
            made = {p.merchant_no: p.amount for p in await payouts.day_payouts(session, day)}
        sunday = day.isoweekday() == 7
        last = (day + timedelta(days=1)).day == 1
        assert ("WEEKLY" in made) is sunday
        assert ("MONTHLY" in made) is last
        for code, falls in (("WEEKLY", sunday), ("MONTHLY", last)):
            if falls:
                assert made[code] == owed[code]  # every unpaid day of the cycle at once
                owed[code] = 0
            assert await balance(resources, AccountKind.biller_payable, code) == owed[code]
        seen_sunday |= sunday
        seen_last |= last
        if seen_sunday and seen_last:
            break
    assert seen_sunday
    assert seen_last


async def test_a_day_of_refunds_is_carried_into_the_next_payout(resources: Resources) -> None:
    await register(resources, "WATER01", fixed=10)
    day = await move(resources, "p1", "WATER01", 5_000)
    await settle(resources, day)
    # The next day refunds nearly all it takes: the fee is above what is left, nothing is paid
    # and the negative net waits for the next day with payments.
    nxt = await move(resources, "p2", "WATER01", 5_000)
    assert nxt == day + timedelta(days=1)
    await move(resources, "r1", "WATER01", -4_995)
    await settle(resources, nxt)
    assert (await batches(resources))[(nxt, "WATER01")] == (5, 10, -5, "carried")
    async with resources.sessions() as session:
        assert await payouts.day_payouts(session, nxt) == []
    assert await balance(resources, AccountKind.biller_payable, "WATER01") == 5
    third = await move(resources, "p3", "WATER01", 10_000)
    await settle(resources, third)
    async with resources.sessions() as session:
        (payout,) = await payouts.day_payouts(session, third)
    assert payout.amount == 10_000 - 10 - 5  # the carried net taken off
    assert await balance(resources, AccountKind.biller_payable, "WATER01") == 0
    assert await balance(resources, AccountKind.fee_income) == 30


async def test_the_days_money_check_covers_the_billers(resources: Resources) -> None:
    await register(resources, "WATER01", fixed=10)
    day = await move(resources, "p1", "WATER01", 5_000)
    await settle(resources, day)
    async with resources.sessions() as session:
        assert await nightly.money_problems(session, day) == []
        await session.execute(
            update(BillerBatch).values(gross=BillerBatch.gross + 1, net=BillerBatch.net + 1)
        )
        await session.execute(
            update(SettlementPayout)
            .where(SettlementPayout.payee_kind == PayeeKind.biller)
            .values(amount=SettlementPayout.amount + 2)
        )
        assert await nightly.money_problems(session, day) == [
            "biller batches carry 5001 fen but billers' payables moved 5000 fen",
            "1 payout(s) whose amount is not the net of the batches they pay",
        ]
        await session.execute(update(BillerBatch).values(status=BatchStatus.due))
        problems = await nightly.money_problems(session, day)
        assert "1 biller batch(es) due and not settled" in problems
        await session.rollback()


@pytest.mark.settings(settlement_posting_chunk=1)
@pytest.mark.parametrize("point", ["billers:1:uncommitted", "billers:1", "billers:2"])
async def test_a_crash_inside_the_biller_postings_takes_each_fee_once(
    resources: Resources, point: str
) -> None:
    from settlement.billers import service as billers

    await register(resources, "WATER01", fixed=10)
    await register(resources, "GAS01", fixed=20)
    day = await move(resources, "w", "WATER01", 5_000)
    await move(resources, "g", "GAS01", 5_000)
    async with resources.sessions() as session:
        await clearing.close_through(resources.sessions, resources.settings, day)
        await billers.make_batches(session, day)
        await session.commit()

    class Crash(Exception):
        pass

    def crash(at: str) -> None:
        if at == point:
            raise Crash(at)

    with pytest.raises(Crash):
        await billers.post_batches(resources.sessions, resources.settings, day, crash)
    await billers.post_batches(resources.sessions, resources.settings, day, lambda _p: None)
    assert await balance(resources, AccountKind.fee_income) == 30
    assert {k: v[3] for k, v in (await batches(resources)).items()} == {
        (day, "GAS01"): "posted",
        (day, "WATER01"): "posted",
    }
