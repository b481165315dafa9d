"""Fee rules: the database's fee of a record and its choice of rule agree with a pure-Python
reference (hypothesis), known values, and a settled day charged by its rules."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, String, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.cli import main
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from settlement.fees import repository, service
from settlement.fees.models import FeeRule, FeeTier
from settlement.fees.schemas import FeeRuleCreate, TierIn
from settlement.nightly import service as nightly
from settlement.nightly.models import RunStatus, SettlementBatch, SettlementLine
from terminals.registry.models import MerchantCategory
from terminals.uploads.models import OfflineRecord
from tests.factories import staff_headers
from tests.settlement.fees import fee_model
from tests.settlement.fees.fee_model import Rule
from tests.settlement.helpers import books, ride_day
from tests.terminals.helpers import BUS_MERCHANT, TAXI_MERCHANT, World

DB_EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def stored(rule: Rule) -> tuple[FeeRule, list[FeeTier]]:
    row = FeeRule(
        merchant_no=rule.merchant_no, category=MerchantCategory(rule.category) if rule.category
        else None, tx_class=rule.tx_class, effective_from=rule.effective_from,
        effective_to=rule.effective_to, per_record=rule.per_record, rate=rule.rate,
        daily=rule.daily, min_fee=rule.min_fee, max_fee=rule.max_fee, note="",
        created_by="test", created_at=clock.now(),
        retired_at=clock.now() if rule.retired else None,
    )  # fmt: skip
    bounds: list[int | None] = [start for start, _ in rule.tiers[1:]]
    tiers = [
        FeeTier(amount_from=start, amount_to=upper, rate=rate)
        for (start, rate), upper in zip(rule.tiers, [*bounds, None], strict=False)
    ]
    return row, tiers


async def sql_record_fees(session: AsyncSession, rule_id: int, amounts: list[int]) -> list[int]:
    """The repository's fee expression, evaluated by the database over literal amounts."""
    parts = [
        select(literal(i).label("i"), literal(a, BigInteger).label("amount"))
        for i, a in enumerate(amounts)
    ]
    values = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
    stmt = (
        select(values.c.i, repository.record_fee(values.c.amount))
        .select_from(values)
        .join(FeeRule, FeeRule.id == rule_id)
        .outerjoin(FeeTier, repository.tier_of(values.c.amount))
        .order_by(values.c.i)
    )
    return [int(fee) for _i, fee in (await session.execute(stmt)).all()]


# --- known values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "amount", "fee"),
    [
        (Rule(0, rate=600), 250, 2),  # 0.6% of 2.50 = 1.5 fen: half rounds up
        (Rule(0, rate=600), 249, 1),  # 1.494 fen
        (Rule(0, rate=60), 833, 0),  # 0.4998 fen
        (Rule(0, rate=60), 834, 1),  # 0.5004 fen
        (Rule(0, per_record=3), 100, 3),
        (Rule(0, per_record=1, rate=1000), 150, 3),  # 1 + 1.5 -> 1 + 2
        (Rule(0, rate=300, min_fee=5), 200, 5),  # 0.6 fen held up to the minimum
        (Rule(0, rate=300, max_fee=50), 100000, 50),  # 300 fen held down to the maximum
        (Rule(0, per_record=5, min_fee=10), -300, 0),  # a refund pays nothing
        (Rule(0, rate=100, tiers=[(0, 1000), (1000, 500), (10000, 200)]), 999, 10),
        (Rule(0, rate=100, tiers=[(0, 1000), (1000, 500), (10000, 200)]), 1000, 5),
        (Rule(0, rate=100, tiers=[(0, 1000), (1000, 500), (10000, 200)]), 25000, 50),
        (Rule(0, rate=100_000), 123, 123),  # the whole amount
    ],
)
async def test_known_record_fees(
    sessions: async_sessionmaker[AsyncSession], rule: Rule, amount: int, fee: int
) -> None:
    assert fee_model.record_fee(rule, amount) == fee
    async with sessions() as session:
        row, tiers = stored(rule)
        await repository.add_rule(session, row, tiers)
        assert await sql_record_fees(session, row.id, [amount]) == [fee]
        await session.rollback()


# --- hypothesis: the database and the reference agree ----------------------------------------

fen = st.integers(min_value=0, max_value=100_000)


@st.composite
def rules(draw: st.DrawFn, rule_id: int = 0) -> Rule:
    lo = draw(st.none() | st.integers(0, 500))
    hi = draw(st.none() | st.integers(0, 5000))
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    starts = sorted(draw(st.sets(st.integers(1, 200_000), max_size=4)))
    tiers = (
        [(s, draw(st.integers(0, 100_000))) for s in [0, *starts]] if draw(st.booleans()) else []
    )
    return Rule(
        rule_id,
        per_record=draw(st.integers(0, 1000)),
        rate=draw(st.integers(0, 100_000)),
        daily=draw(st.integers(0, 10_000)),
        min_fee=lo,
        max_fee=hi,
        tiers=tiers,
    )


@DB_EXAMPLES
@given(rule=rules(), amounts=st.lists(st.integers(-100_000, 10**9), min_size=1, max_size=30))
async def test_sql_fee_of_each_record_is_the_reference(
    sessions: async_sessionmaker[AsyncSession], rule: Rule, amounts: list[int]
) -> None:
    async with sessions() as session:
        row, tiers = stored(rule)
        await repository.add_rule(session, row, tiers)
        got = await sql_record_fees(session, row.id, amounts)
        await session.rollback()
    expected = [fee_model.record_fee(rule, a) for a in amounts]
    assert got == expected
    for amount, fee in zip(amounts, got, strict=True):
        if amount > 0:
            assert rule.min_fee is None or fee >= rule.min_fee
            assert rule.max_fee is None or fee <= rule.max_fee
        else:
            assert fee == 0


@given(
    rule=rules(),
    amount=st.integers(1, 10**9),
)
def test_half_up_is_the_nearest_fen(rule: Rule, amount: int) -> None:
    # Without bounds and per-record part, the fee is within half a fen of the exact value, and an
    # exact half goes up.
    bare = Rule(0, rate=rule.rate, tiers=rule.tiers)
    rate = [r for s, r in bare.tiers if amount >= s][-1] if bare.tiers else bare.rate
    exact_times_units = amount * rate
    fee = fee_model.record_fee(bare, amount)
    assert abs(fee * fee_model.RATE_UNITS - exact_times_units) * 2 <= fee_model.RATE_UNITS
    if (exact_times_units * 2) % (2 * fee_model.RATE_UNITS) == fee_model.RATE_UNITS:
        assert fee * fee_model.RATE_UNITS > exact_times_units


MERCHANTS = ("321100000000001", "321100000000002", "321100000000003")
CATEGORIES = ("bus", "taxi")
CLASSES = ("offline", "online_purchase")
DAY0 = date(2026, 3, 1)


@st.composite
def scoped_rules(draw: st.DrawFn) -> list[Rule]:
    out = []
    for i in range(draw(st.integers(0, 8))):
        scope = draw(st.sampled_from(["merchant", "category", "default"]))
        start = DAY0 + timedelta(days=draw(st.integers(0, 40)))
        end = draw(st.none() | st.integers(0, 30))
        out.append(
            Rule(
                i,
                merchant_no=draw(st.sampled_from(MERCHANTS)) if scope == "merchant" else None,
                category=draw(st.sampled_from(CATEGORIES)) if scope == "category" else None,
                tx_class=draw(st.none() | st.sampled_from(CLASSES)),
                effective_from=start,
                effective_to=None if end is None else start + timedelta(days=end),
                per_record=i + 1,
                retired=draw(st.integers(0, 9)) == 0,
            )
        )
    return out


@DB_EXAMPLES
@given(
    rules=scoped_rules(),
    day=st.integers(0, 60).map(lambda n: DAY0 + timedelta(days=n)),
    merchant_no=st.sampled_from(MERCHANTS),
    category=st.sampled_from(CATEGORIES),
    tx_class=st.sampled_from(CLASSES),
)
async def test_the_rule_chosen_is_the_reference(
    sessions: async_sessionmaker[AsyncSession],
    rules: list[Rule],
    day: date,
    merchant_no: str,
    category: str,
    tx_class: str,
) -> None:
    async with sessions() as session:
        ids: dict[int, int] = {}
        for rule in rules:
            row, tiers = stored(rule)
            await repository.add_rule(session, row, tiers)
            ids[row.id] = rule.id
        stmt = select(
            repository.rule_for(
                day,
                literal(merchant_no, String),
                literal(category, String),
                literal(tx_class, String),
            )
        )
        chosen = (await session.execute(stmt)).scalar_one()
        await session.rollback()
    expected = fee_model.choose(rules, day, merchant_no, category, tx_class)
    assert (ids[chosen] if chosen is not None else None) == (expected.id if expected else None)


# --- a settled day charged by its rules -------------------------------------------------------


async def add(resources: Resources, **fields: Any) -> int:
    async with resources.sessions() as session:
        out = await service.add_rule(session, FeeRuleCreate(**fields), actor="test")
        await session.commit()
    return out.id


async def test_a_day_is_charged_by_its_rules(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    day = await ride_day(client, world, resources)
    before = day - timedelta(days=10)
    # Every merchant: 0.3% with a 1-fen minimum. The bus merchant: its own rule, which changes
    # on the day settled (the old one still applies to the day before). Taxis by category, tiered.
    await add(resources, effective_from=before, rate=300, min_fee=1)
    await add(resources, merchant_no=BUS_MERCHANT, effective_from=before, per_record=50)
    await add(resources, merchant_no=BUS_MERCHANT, tx_class="offline", effective_from=day,
              per_record=2, rate=600, max_fee=3, daily=10)  # fmt: skip
    await add(resources, merchant_no=BUS_MERCHANT, effective_from=day + timedelta(days=1),
              per_record=999)  # fmt: skip
    await add(resources, category=MerchantCategory.taxi, effective_from=before, rate=100,
              tiers=[TierIn(amount_from=0, rate=5000), TierIn(amount_from=1000, rate=1000)])  # fmt: skip

    result = await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    assert result.status is RunStatus.settled

    async with resources.sessions() as session:
        r = OfflineRecord
        rows = await session.execute(
            select(r.merchant_id, r.amount).where(r.clearing_date == day, r.result_code == "00")
        )
        amounts: dict[int, list[int]] = {}
        for merchant_id, amount in rows.all():
            amounts.setdefault(merchant_id, []).append(int(amount or 0))
        lines = {
            line.merchant_no: line
            for line in (await session.execute(select(SettlementLine))).scalars()
        }
        batches = {
            b.merchant_no: b for b in (await session.execute(select(SettlementBatch))).scalars()
        }
    bus_rule = Rule(0, per_record=2, rate=600, max_fee=3, daily=10)
    taxi_rule = Rule(0, rate=100, tiers=[(0, 5000), (1000, 1000)])
    expected = {
        BUS_MERCHANT: fee_model.line_fee(bus_rule, amounts[lines[BUS_MERCHANT].merchant_id]),
        TAXI_MERCHANT: fee_model.line_fee(taxi_rule, amounts[lines[TAXI_MERCHANT].merchant_id]),
    }
    assert {m: line.fee for m, line in lines.items()} == expected
    assert all(fee > 0 for fee in expected.values())
    assert {m: (b.fee, b.net) for m, b in batches.items()} == {
        m: (expected[m], lines[m].gross - expected[m]) for m in expected
    }
    after = await books(resources)
    assert after.fee_income == sum(expected.values())
    assert after.payable == {m: lines[m].gross - expected[m] for m in expected}
    assert after.pending == {BUS_MERCHANT: 0, TAXI_MERCHANT: 0}

    # The day's fees are computed: a rule may no longer start on it.
    with pytest.raises(service.FeeRuleBackdated):
        await add(resources, effective_from=day, per_record=1)


# --- the API ----------------------------------------------------------------------------------


async def test_finance_manages_rules_over_the_api(client: httpx.AsyncClient, world: World) -> None:
    finance = await staff_headers(client, "fin1", Role.finance)
    auditor = await staff_headers(client, "aud1", Role.auditor)
    body = {"merchant_no": BUS_MERCHANT, "tx_class": "offline", "effective_from": "2030-01-01",
            "rate": 600, "min_fee": 1, "max_fee": 500,
            "tiers": [{"amount_from": 0, "rate": 800}, {"amount_from": 10000, "rate": 600}]}  # fmt: skip
    created = await client.post("/api/v1/settlement/fee-rules", json=body, headers=finance)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["tiers"] == [
        {"amount_from": 0, "amount_to": 10000, "rate": 800},
        {"amount_from": 10000, "amount_to": None, "rate": 600},
    ]
    assert (
        await client.post("/api/v1/settlement/fee-rules", json=body, headers=auditor)
    ).status_code == 403
    listed = await client.get("/api/v1/settlement/fee-rules", headers=auditor)
    assert [r["id"] for r in listed.json()] == [rule["id"]]
    on = await client.get(
        "/api/v1/settlement/fee-rules", params={"on": "2029-12-31"}, headers=auditor
    )
    assert on.json() == []

    refusals = [
        ({**body, "category": "bus"}, 422, "FeeRuleInvalid"),
        ({**body, "effective_to": "2029-01-01"}, 422, "FeeRuleInvalid"),
        ({**body, "min_fee": 600}, 422, "FeeRuleInvalid"),
        ({**body, "tiers": [{"amount_from": 5, "rate": 1}]}, 422, "FeeRuleInvalid"),
        (
            {**body, "tiers": [{"amount_from": 0, "rate": 1}, {"amount_from": 0, "rate": 2}]},
            422,
            "FeeRuleInvalid",
        ),
        ({**body, "rate": 100_001}, 422, "RequestValidationFailed"),
        ({**body, "per_record": -1}, 422, "RequestValidationFailed"),
        ({**body, "merchant_no": "999999999999999"}, 404, "NotFound"),
    ]
    for payload, code, error in refusals:
        answer = await client.post("/api/v1/settlement/fee-rules", json=payload, headers=finance)
        assert (answer.status_code, answer.json()["error"]) == (code, error), payload

    retired = await client.post(
        f"/api/v1/settlement/fee-rules/{rule['id']}/retire", headers=finance
    )
    assert retired.status_code == 200
    assert retired.json()["retired_at"] is not None
    again = await client.post(f"/api/v1/settlement/fee-rules/{rule['id']}/retire", headers=finance)
    assert (again.status_code, again.json()["error"]) == (409, "FeeRuleRetired")
    missing = await client.post("/api/v1/settlement/fee-rules/999999/retire", headers=finance)
    assert missing.status_code == 404
    assert (await client.get("/api/v1/settlement/fee-rules", headers=finance)).json() == []
    shown = await client.get(
        "/api/v1/settlement/fee-rules", params={"retired": "true"}, headers=finance
    )
    assert len(shown.json()) == 1


async def _fees_cli(*args: str) -> Result:
    """``cardsvc fees ...`` in this process (a thread of its own: the command runs its own
    event loop), so that coverage sees it."""
    return await asyncio.to_thread(CliRunner().invoke, main, ["fees", *args])


@pytest.mark.usefixtures("cli_env")
async def test_rules_from_the_command_line(world: World) -> None:
    added = await _fees_cli("add", "--from", "2030-01-01", "--category", "bus", "--rate", "60",
                      "--tier", "0:100", "--tier", "1000:50", "--max", "20")  # fmt: skip
    assert added.exit_code == 0, added.stderr
    assert "category bus  class *  from 2030-01-01" in added.stdout
    assert "tiers 0:100,1000:50" in added.stdout
    refused = await _fees_cli("add", "--from", "2030-01-01", "--category", "bus",
                        "--merchant", BUS_MERCHANT)  # fmt: skip
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: FeeRuleInvalid: ")
    listed = await _fees_cli("list", "--on", "2030-02-01")
    assert listed.stdout.count("\n") == 1
    assert (await _fees_cli("retire", "1")).exit_code == 0
    assert (await _fees_cli("list")).stdout == "no fee rule\n"


async def test_online_trade_is_charged_per_transaction(world: World, resources: Resources) -> None:
    """Online classes: a record is one ledger transaction on the merchant's pending account; a
    refund pays no fee and its line gets no daily fee."""
    from cardsvc.clearing import service as clearing
    from cardsvc.ledger import service as ledger
    from cardsvc.ledger.models import AccountKind, Side
    from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest

    pending = AccountRef(AccountKind.merchant_pending, TAXI_MERCHANT)
    outside = AccountRef(AccountKind.bank, "DEMO")
    trade = [("online_purchase", 1250), ("online_purchase", 1249), ("online_purchase", 80000),
             ("online_refund", -1250)]  # fmt: skip
    async with resources.sessions() as session:
        day = await clearing.clearing_date(session, resources.settings)
        for n, (tx_type, amount) in enumerate(trade):
            to_merchant = amount > 0
            await ledger.post(session, PostingRequest(
                idempotency_key=f"test-online:{n}", tx_type=tx_type, clearing_date=day,
                entries=[Entry(outside if to_merchant else pending, Side.debit, abs(amount)),
                         Entry(pending if to_merchant else outside, Side.credit, abs(amount))],
            ))  # fmt: skip
        await session.commit()
    # 0.6% with at most 3.00 yuan per transaction, and 0.10 yuan a day, on every online class.
    await add(resources, category=MerchantCategory.taxi, tx_class="online_purchase",
              effective_from=day - timedelta(days=1), rate=600, max_fee=300, daily=10)  # fmt: skip
    await add(resources, category=MerchantCategory.taxi, tx_class="online_refund",
              effective_from=day - timedelta(days=1), per_record=5, daily=10)  # fmt: skip
    await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    async with resources.sessions() as session:
        lines = {
            (line.merchant_no, line.tx_class): (line.count, line.gross, line.fee)
            for line in (await session.execute(select(SettlementLine))).scalars()
        }
    # 7.5 -> 8, 7.494 -> 7, 480 -> 300 (the maximum), + 10 a day; the refund pays nothing.
    assert lines == {
        (TAXI_MERCHANT, "online_purchase"): (3, 82499, 8 + 7 + 300 + 10),
        (TAXI_MERCHANT, "online_refund"): (1, -1250, 0),
    }
    assert (await books(resources)).fee_income == 325
