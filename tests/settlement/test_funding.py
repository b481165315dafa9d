"""The day's money check covers the funding of online accounts: every counter deposit and
withdrawal and every bank credit of the day (to an account or to suspense) against the ledger
transaction under its key, and every funding transaction of the day against the movement behind
it."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
from sqlalchemy import delete, select, update

from cardsvc.clearing import service as clearing
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import (
    AccountKind,
    LedgerLine,
    LedgerTransaction,
    LedgerTransactionKey,
    Side,
)
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from settlement.nightly import service as nightly
from terminals.devices.bank import Bank
from terminals.registry.models import MerchantCategory, TerminalKind
from tests.factories import make_card, make_site, staff_headers
from tests.terminals.helpers import signed_in

PIN = "482915"
API = "/api/v1/accounts"


async def fund_a_day(resources: Resources, client: httpx.AsyncClient) -> date:
    """A day with every funding movement, through the API: a cash deposit, a withdrawal paid at
    once, one above the approval limit approved by a supervisor, a bank credit to the account
    and one to suspense."""
    operator = await staff_headers(client, "operator", Role.counter_operator)
    supervisor = await staff_headers(client, "supervisor", Role.supervisor)
    site = await make_site(resources, 321100030009, MerchantCategory.retail, TerminalKind.counter)
    pin_pad = await signed_in(client, site)
    card = await make_card(resources, 31, pin=None)

    def pin_fields() -> dict[str, str]:
        block = pin_pad.pin_block(PIN, card.card_no)
        return {"card_no": card.card_no, "terminal_no": site.terminal_no, "pin_block": block}

    found = await client.post(f"{API}/lookup", json={"card_no": card.card_no}, headers=operator)
    reference = found.json()["reference"]
    assert (
        await client.post(f"{API}/{reference}/pin", json=pin_fields(), headers=operator)
    ).is_success
    deposit = {"counter_code": "DESK09", "receipt_no": "R-1", "amount": 900_000}
    answer = await client.post(f"{API}/{reference}/deposits", json=deposit, headers=operator)
    assert answer.status_code == 200, answer.text
    for receipt, amount in (("W-1", 10_000), ("W-2", 300_000)):
        body = {"counter_code": "DESK09", "receipt_no": receipt, "amount": amount, **pin_fields()}
        answer = await client.post(f"{API}/{reference}/withdrawals", json=body, headers=operator)
        assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "awaiting_approval"
    approved = await client.post(
        f"{API}/withdrawals/{answer.json()['id']}/approve", headers=supervisor
    )
    assert approved.json()["status"] == "posted", approved.text
    bank = Bank(client)
    for bank_reference, written in (("B1", reference), ("B2", "nobody's")):
        credit = {"bank_reference": bank_reference, "account_reference": written,
                  "amount": 20_000, "value_date": "2026-12-01"}  # fmt: skip
        assert (await bank.notify(credit)).status_code == 200
    async with resources.sessions() as session:
        return await clearing.clearing_date(session, resources.settings)


async def transaction_of(resources: Resources, key: str) -> tuple[int, date]:
    async with resources.sessions() as session:
        row = (
            await session.execute(
                select(
                    LedgerTransactionKey.transaction_id, LedgerTransactionKey.clearing_date
                ).where(LedgerTransactionKey.idempotency_key == key)
            )
        ).one()
        return int(row[0]), row[1]


async def test_a_clean_day_of_funding_balances(
    resources: Resources, client: httpx.AsyncClient
) -> None:
    day = await fund_a_day(resources, client)
    result = await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    assert result.steps[-1].detail.startswith("balanced")
    async with resources.sessions() as session:
        assert await nightly.money_problems(session, day) == []
        assert (await ledger.check_invariants(session)).ok


async def test_a_tampered_or_missing_funding_posting_fails_the_check(
    resources: Resources, client: httpx.AsyncClient
) -> None:
    day = await fund_a_day(resources, client)
    await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    deposit, _ = await transaction_of(resources, "deposit:DESK09:R-1")
    withdrawal, _ = await transaction_of(resources, "withdrawal:DESK09:W-1")
    credit, credit_day = await transaction_of(resources, "bank-credit:DEMO:B1")
    suspense, _ = await transaction_of(resources, "bank-credit:DEMO:B2")
    async with resources.sessions() as session:
        # The deposit's amount changed; the withdrawal paid into another drawer; the matched
        # credit's posting gone; the suspense credit's posting moved to another account.
        t, line = LedgerTransaction, LedgerLine
        await session.execute(update(t).where(t.id == deposit).values(amount=t.amount + 1))
        drawer = await ledger.ensure_account(
            session, AccountRef(AccountKind.counter_cash, "DESK10")
        )
        await session.execute(
            update(line)
            .where(line.transaction_id == withdrawal, line.side == Side.credit)
            .values(account_id=drawer)
        )
        for table in (line, t):
            await session.execute(
                delete(table).where(
                    table.transaction_id == credit if table is line else table.id == credit,
                    table.clearing_date == credit_day,
                )
            )
        await session.execute(
            delete(LedgerTransactionKey).where(LedgerTransactionKey.transaction_id == credit)
        )
        fee_income = await ledger.ensure_account(session, AccountRef(AccountKind.fee_income, ""))
        await session.execute(
            update(line)
            .where(line.transaction_id == suspense, line.side == Side.credit)
            .values(account_id=fee_income)
        )
        assert await nightly.money_problems(session, day) == [
            "1 bank credit(s) without their ledger posting",
            "1 deposit(s) whose ledger posting is not theirs (amount, type, reference or accounts)",
            "1 suspense credit(s) whose ledger posting is not theirs "
            "(amount, type, reference or accounts)",
            "1 withdrawal(s) whose ledger posting is not theirs "
            "(amount, type, reference or accounts)",
            "1 account_deposit posting(s) with no movement or credit behind them",
        ]
        await session.rollback()


async def test_a_funding_posting_with_no_movement_stops_the_settlement(
    resources: Resources, client: httpx.AsyncClient
) -> None:
    day = await fund_a_day(resources, client)
    async with resources.sessions() as session:
        # Money put into an account straight in the ledger, as if a counter had taken it.
        resident = AccountRef(AccountKind.resident_account, "1")
        drawer = AccountRef(AccountKind.counter_cash, "DESK09")
        await ledger.post(session, PostingRequest(
            "deposit:DESK09:R-forged", "account_deposit", day,
            [Entry(drawer, Side.debit, 5_000), Entry(resident, Side.credit, 5_000)]))  # fmt: skip
        await session.commit()
    with pytest.raises(nightly.SettlementUnbalanced, match="no file written") as refused:
        await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    assert "1 account_deposit posting(s) with no movement or credit behind them" in str(
        refused.value
    )
