"""Cycles and payouts: a merchant is paid on its cycle's days, held without bank details (and
paid the held amount once it has them), and each payout posts payable -> bank once, whatever
crash comes in between."""

from __future__ import annotations

import asyncio
import signal
from datetime import date, timedelta

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, update

from cardsvc import clock
from cardsvc.cli import main
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.ledger.schemas import AccountRef
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from settlement.nightly import service as nightly
from settlement.nightly.models import SettlementBatch
from settlement.payouts import repository, service
from settlement.payouts.models import Cycle, PayoutStatus, SettlementPayee, SettlementPayout
from settlement.payouts.schemas import PayeeIn
from tests.factories import staff_headers
from tests.settlement.helpers import books, ride_day
from tests.terminals.helpers import BUS_MERCHANT, TAXI_MERCHANT, World

BANK = {"bank_name": "城市银行", "bank_branch": "东门支行", "account_no": "6222000011112222",
        "account_holder": "City Bus Co."}  # fmt: skip


async def set_payee(resources: Resources, merchant_no: str, **fields: object) -> None:
    async with resources.sessions() as session:
        await service.set_payee(session, merchant_no, PayeeIn.model_validate(fields), actor="t")
        await session.commit()


async def settle(resources: Resources, day: date) -> None:
    await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)


async def payouts_of(resources: Resources, day: date) -> dict[str, tuple[PayoutStatus, int]]:
    async with resources.sessions() as session:
        return {
            p.merchant_no: (p.status, p.amount) for p in await service.day_payouts(session, day)
        }


async def bank_balance(resources: Resources) -> int:
    async with resources.sessions() as session:
        return await ledger.balance(
            session, AccountRef(AccountKind.bank, service.payout_bank(resources.settings))
        )


@pytest.mark.parametrize(
    ("cycle", "cycle_day", "day", "falls"),
    [
        (Cycle.daily, None, date(2026, 3, 4), True),
        (Cycle.weekly, 3, date(2026, 3, 4), True),  # a Wednesday
        (Cycle.weekly, 4, date(2026, 3, 4), False),
        (Cycle.monthly, 4, date(2026, 3, 4), True),
        (Cycle.monthly, 5, date(2026, 3, 4), False),
        (Cycle.monthly, 31, date(2026, 2, 28), True),  # past the month's end: its last day
        (Cycle.monthly, 29, date(2026, 2, 28), True),
        (Cycle.monthly, 28, date(2026, 2, 28), True),
        (Cycle.monthly, 27, date(2026, 2, 28), False),
        (Cycle.monthly, 31, date(2026, 4, 30), True),
        (Cycle.monthly, 31, date(2026, 3, 30), False),
    ],
)
async def test_cycle_days(
    resources: Resources, cycle: Cycle, cycle_day: int | None, day: date, falls: bool
) -> None:
    async with resources.sessions() as session:
        session.add(SettlementPayee(merchant_no="321100000000009", cycle=cycle,
                                    cycle_day=cycle_day, updated_by="t", updated_at=clock.now()))  # fmt: skip
        await session.flush()
        found = await session.execute(
            select(SettlementPayee.merchant_no).where(repository.cycle_falls_on(day))
        )
        assert (found.scalars().all() == ["321100000000009"]) is falls
        await session.rollback()


async def test_paid_on_its_cycle_held_without_bank_details(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    day = await ride_day(client, world, resources)
    await set_payee(resources, BUS_MERCHANT, **BANK)
    # The run issues the day's payouts once its bank file is out: held back here, to look at the
    # payouts while they are due.
    await settle_without_issuing(resources, day)
    before = await books(resources)
    bus, taxi = before.payable[BUS_MERCHANT], before.payable[TAXI_MERCHANT]
    assert await payouts_of(resources, day) == {
        BUS_MERCHANT: (PayoutStatus.due, bus),
        TAXI_MERCHANT: (PayoutStatus.held, taxi),
    }
    async with resources.sessions() as session:
        listed = [p async for p in service.bank_file_payouts(session, day)]
        held = await service.held_payouts(session, day)
    assert [(p.reference, p.account_no, p.account_holder) for p in listed] == [
        (f"P{day:%Y%m%d}{BUS_MERCHANT}", BANK["account_no"], BANK["account_holder"])
    ]
    assert [p.merchant_no for p in held] == [TAXI_MERCHANT]

    issued = await service.issue_payouts(resources.sessions, resources.settings, day)
    assert (issued.issued, issued.amount) == (1, bus)
    again = await service.issue_payouts(resources.sessions, resources.settings, day)
    assert (again.issued, again.amount) == (0, 0)
    after = await books(resources)
    assert after.payable == {BUS_MERCHANT: 0, TAXI_MERCHANT: taxi}
    assert await bank_balance(resources) == -bus  # money left the bank account
    assert (await payouts_of(resources, day))[BUS_MERCHANT] == (PayoutStatus.issued, bus)
    async with resources.sessions() as session:
        listed_again = [p.reference async for p in service.bank_file_payouts(session, day)]
    assert listed_again == [f"P{day:%Y%m%d}{BUS_MERCHANT}"]  # the same bank file on a rerun
    # With its payouts issued the day settles, and its report names them.
    result = await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    assert result.steps[-1].detail.endswith(f"payouts 1 to pay ({bus} fen), 1 held ({taxi} fen)")

    # The taxi company gives its bank details and is paid weekly on the next day's weekday: the
    # next day's payout carries the held amount; the bus company is owed nothing new.
    nxt = day + timedelta(days=1)
    await set_payee(resources, TAXI_MERCHANT, cycle="weekly", cycle_day=nxt.isoweekday(),
                    **{**BANK, "account_holder": "Taxi Co."})  # fmt: skip
    await settle(resources, nxt)  # issued by the run, after its bank file
    assert await payouts_of(resources, nxt) == {TAXI_MERCHANT: (PayoutStatus.issued, taxi)}
    assert (await books(resources)).payable == {BUS_MERCHANT: 0, TAXI_MERCHANT: 0}
    async with resources.sessions() as session:
        refs = {b.merchant_no: b.payout_reference
                for b in (await session.execute(select(SettlementBatch))).scalars()}  # fmt: skip
    assert refs == {BUS_MERCHANT: f"P{day:%Y%m%d}{BUS_MERCHANT}",
                    TAXI_MERCHANT: f"P{nxt:%Y%m%d}{TAXI_MERCHANT}"}  # fmt: skip

    # The day's money check covers the payouts: one that does not pay its batches' net is named.
    async with resources.sessions() as session:
        assert await nightly.money_problems(session, nxt) == []
        await session.execute(
            update(SettlementPayout)
            .where(SettlementPayout.merchant_no == TAXI_MERCHANT)
            .values(amount=SettlementPayout.amount + 1)
        )
        assert await nightly.money_problems(session, nxt) == [
            "1 payout(s) whose amount is not the net of the batches they pay"
        ]
        await session.rollback()


class Crash(Exception):
    pass


async def _not_issued(*_args: object, **_kwargs: object) -> service.IssueResult:
    return service.IssueResult(0, 0)


async def settle_without_issuing(resources: Resources, day: date) -> None:
    """A run whose files step does not issue the payouts of its bank file: the payouts stay
    due, and the report refuses the day for it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service, "issue_payouts", _not_issued)
        with pytest.raises(nightly.SettlementUnbalanced, match="due and not issued"):
            await settle(resources, day)


@pytest.mark.settings(settlement_posting_chunk=1)
@pytest.mark.parametrize("point", ["payouts:1:uncommitted", "payouts:1", "payouts:2:uncommitted"])
async def test_a_crash_inside_the_payout_postings_pays_each_once(
    client: httpx.AsyncClient, world: World, resources: Resources, point: str
) -> None:
    day = await ride_day(client, world, resources)
    await set_payee(resources, BUS_MERCHANT, **BANK)
    await set_payee(resources, TAXI_MERCHANT, **{**BANK, "account_holder": "Taxi Co."})
    await settle_without_issuing(resources, day)
    owed = (await books(resources)).payable

    def crash(at: str) -> None:
        if at == point:
            raise Crash(at)

    with pytest.raises(Crash):
        await service.issue_payouts(resources.sessions, resources.settings, day, crash)
    done = await service.issue_payouts(resources.sessions, resources.settings, day)
    assert done.issued == (2 if point == "payouts:1:uncommitted" else 1)
    assert (await books(resources)).payable == {BUS_MERCHANT: 0, TAXI_MERCHANT: 0}
    assert await bank_balance(resources) == -sum(owed.values())
    statuses = {m: s for m, (s, _a) in (await payouts_of(resources, day)).items()}
    assert statuses == {BUS_MERCHANT: PayoutStatus.issued, TAXI_MERCHANT: PayoutStatus.issued}


async def test_payees_over_the_api(client: httpx.AsyncClient, world: World) -> None:
    finance = await staff_headers(client, "fin1", Role.finance)
    auditor = await staff_headers(client, "aud1", Role.auditor)
    url = f"/api/v1/settlement/payees/{BUS_MERCHANT}"
    shown = await client.get(url, headers=auditor)
    assert shown.json()["held"] is True
    assert shown.json()["cycle"] == "daily"
    body = {"cycle": "monthly", "cycle_day": 31, **BANK}
    assert (await client.put(url, json=body, headers=auditor)).status_code == 403
    put = await client.put(url, json=body, headers=finance)
    assert put.status_code == 200, put.text
    assert put.json()["held"] is False
    refusals = [
        ({"cycle": "weekly"}, 422, "PayeeInvalid"),
        ({"cycle": "weekly", "cycle_day": 8}, 422, "PayeeInvalid"),
        ({"cycle": "daily", "cycle_day": 3}, 422, "PayeeInvalid"),
        ({"bank_name": "城市银行"}, 422, "PayeeInvalid"),
        ({"cycle_day": 32}, 422, "RequestValidationFailed"),
        ({**BANK, "account_no": "12-34"}, 422, "RequestValidationFailed"),
        ({"cycle": "yearly"}, 422, "RequestValidationFailed"),
    ]
    for payload, code, error in refusals:
        answer = await client.put(url, json=payload, headers=finance)
        assert (answer.status_code, answer.json()["error"]) == (code, error), payload
    missing = await client.put("/api/v1/settlement/payees/999999999999999", json={},
                               headers=finance)  # fmt: skip
    assert missing.status_code == 404
    listed = await client.get("/api/v1/settlement/payees", headers=auditor)
    assert [(p["merchant_no"], p["held"]) for p in listed.json()] == [
        (BUS_MERCHANT, False), (TAXI_MERCHANT, True),
    ]  # fmt: skip
    payouts = await client.get("/api/v1/settlement/payouts", params={"date": "2026-03-02"},
                               headers=auditor)  # fmt: skip
    assert payouts.json() == []


async def test_an_issued_payout_is_confirmed_once(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    from cardsvc.errors import InvalidStateTransition, NotFound

    day = await ride_day(client, world, resources)
    await set_payee(resources, BUS_MERCHANT, **BANK)
    await settle_without_issuing(resources, day)
    ref = f"P{day:%Y%m%d}{BUS_MERCHANT}"
    async with resources.sessions() as session:
        with pytest.raises(InvalidStateTransition, match="is due"):
            await service.confirm(session, ref, evidence="line 1", actor="t")
    await service.issue_payouts(resources.sessions, resources.settings, day)
    async with resources.sessions() as session:
        found = await service.by_references(session, [ref, "P20000101000000000000000"])
        assert set(found) == {ref}
        assert found[ref].status is PayoutStatus.issued
        await service.confirm(session, ref, evidence="statement 7 line 1", actor="t")
        with pytest.raises(InvalidStateTransition, match="is confirmed"):
            await service.confirm(session, ref, evidence="again", actor="t")
        with pytest.raises(NotFound):
            await service.confirm(session, "P20000101000000000000000", evidence="x", actor="t")
        await session.commit()
    assert (await payouts_of(resources, day))[BUS_MERCHANT][0] is PayoutStatus.confirmed


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("point", ["payouts:1:uncommitted", "payouts:1"])
async def test_a_run_killed_inside_the_payout_postings_resumes(
    client: httpx.AsyncClient, world: World, resources: Resources, point: str
) -> None:
    from sqlalchemy import func

    from cardsvc.ledger.models import LedgerTransaction
    from tests.settlement.nightly.test_run import _cli

    day = await ride_day(client, world, resources)
    await set_payee(resources, BUS_MERCHANT, **BANK)
    await set_payee(resources, TAXI_MERCHANT, **{**BANK, "account_holder": "Taxi Co."})
    killed = _cli(resources.settings, day, CARDSVC_SETTLEMENT_CRASH_AT=point,
                  CARDSVC_SETTLEMENT_POSTING_CHUNK="1")  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = _cli(resources.settings, day, CARDSVC_SETTLEMENT_POSTING_CHUNK="1")
    assert resumed.returncode == 0, resumed.stderr
    after = await books(resources)
    assert after.payable == {BUS_MERCHANT: 0, TAXI_MERCHANT: 0}
    async with resources.sessions() as session:
        payouts = (
            await session.execute(
                select(func.count()).where(LedgerTransaction.tx_type == service.POSTING_TX_TYPE)
            )
        ).scalar_one()
    assert payouts == 2
    statuses = {m: s for m, (s, _a) in (await payouts_of(resources, day)).items()}
    assert statuses == {BUS_MERCHANT: PayoutStatus.issued, TAXI_MERCHANT: PayoutStatus.issued}


async def _payouts_cli(*args: str) -> Result:
    """``cardsvc payouts ...`` in this process (a thread of its own: the command runs its own
    event loop), so that coverage sees it."""
    return await asyncio.to_thread(CliRunner().invoke, main, ["payouts", *args])


@pytest.mark.usefixtures("cli_env")
async def test_payees_from_the_command_line(world: World) -> None:
    held = await _payouts_cli("payees")
    assert held.exit_code == 0, held.stderr
    assert f"{BUS_MERCHANT}  daily       HELD (no bank details)  City Bus Co." in held.stdout
    bank = ["--bank-name", "城市银行", "--branch", "东门支行", "--account", "6222000011112222",
            "--holder", "City Bus Co."]  # fmt: skip
    set_ = await _payouts_cli("set-payee", BUS_MERCHANT, "--cycle", "weekly", "--day", "5", *bank)
    assert set_.exit_code == 0, set_.stderr
    assert "weekly 5" in set_.stdout
    assert "6222000011112222" in set_.stdout
    refused = await _payouts_cli("set-payee", BUS_MERCHANT, "--cycle", "weekly")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: PayeeInvalid: ")
    assert (
        await _payouts_cli("list", "--date", "2026-03-02")
    ).stdout == "no payout on 2026-03-02\n"
