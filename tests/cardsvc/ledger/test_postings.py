"""Postings, idempotency, reversals, balances as of a time, and the invariant report."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.ledger import service as ledger
from cardsvc.ledger.errors import (
    AlreadyReversed,
    IdempotencyConflict,
    InsufficientFunds,
    LedgerUnbalanced,
    TransactionNotFound,
)
from cardsvc.ledger.models import AccountKind, LedgerLine, LedgerTransaction, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from tests.cardsvc.ledger.helpers import (
    COUNTER,
    DAY,
    FEES,
    card,
    cr,
    dr,
    load,
    merchant,
    purchase_batch,
)


async def _count(session: AsyncSession, model: type[LedgerLine] | type[LedgerTransaction]) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_load_purchase_settle_balances_and_invariants(session: AsyncSession) -> None:
    shop = merchant(1)
    payable = merchant(1, AccountKind.merchant_payable)
    await ledger.post(session, load("l1", card(1), 5000))
    await ledger.post(session, load("l2", card(2), 3000))
    batch = await ledger.post(
        session, purchase_batch("u1", [(card(1), 1200), (card(2), 800)], shop)
    )
    assert (batch.amount, batch.line_count, batch.replayed) == (2000, 3, False)
    settle = PostingRequest(
        "s1", "settlement", DAY, [dr(shop, 2000), cr(payable, 1990), cr(FEES, 10)]
    )
    await ledger.post(session, settle)
    await session.commit()

    assert await ledger.balance(session, card(1)) == 3800
    assert await ledger.balance(session, card(2)) == 2200
    assert await ledger.balance(session, COUNTER) == 8000  # asset, debit-normal
    assert await ledger.balance(session, shop) == 0
    assert await ledger.balance(session, payable) == 1990
    assert await ledger.balance(session, FEES) == 10
    assert await ledger.balance(session, card(99)) == 0  # unknown account
    report = await ledger.check_invariants(session)
    assert report.ok, report.render()
    assert (report.transactions, report.lines, report.signed_total) == (4, 10, 0)


@pytest.mark.parametrize(
    "entries",
    [
        [],
        [dr(COUNTER, 100), cr(card(1), 99)],
        [dr(COUNTER, 0), cr(card(1), 0)],
        [dr(COUNTER, -5), cr(card(1), -5)],
        [Entry(COUNTER, Side.debit, 1.5), Entry(card(1), Side.credit, 1.5)],  # type: ignore[arg-type]
        [Entry(COUNTER, Side.debit, True), Entry(card(1), Side.credit, True)],
    ],
)
async def test_unbalanced_or_bad_amounts_are_refused(
    session: AsyncSession, entries: list[Entry]
) -> None:
    with pytest.raises(LedgerUnbalanced):
        await ledger.post(session, PostingRequest("bad", "load", DAY, entries))
    assert await _count(session, LedgerTransaction) == 0


async def test_insufficient_funds_refuses_the_whole_posting(
    session: AsyncSession, sessions: object
) -> None:
    await ledger.post(session, load("l1", card(1), 1000))
    await ledger.post(session, load("l2", card(2), 100))
    await session.commit()
    request = purchase_batch("u1", [(card(1), 500), (card(2), 101)], merchant(1))
    with pytest.raises(InsufficientFunds) as excinfo:
        await ledger.post(session, request)
    assert "3211000000000002" in excinfo.value.detail
    await session.rollback()
    assert await ledger.balance(session, card(1)) == 1000  # the good line was not applied either
    assert await ledger.balance(session, card(2)) == 100
    assert await _count(session, LedgerTransaction) == 2
    # exactly the balance is fine
    await ledger.post(session, purchase_batch("u2", [(card(1), 500), (card(2), 100)], merchant(1)))
    await session.commit()
    assert await ledger.balance(session, card(2)) == 0
    assert (await ledger.check_invariants(session)).ok


async def test_overdraft_kinds_may_go_negative(session: AsyncSession) -> None:
    # suspense and pending clearing may go negative; a payable may not
    gray = AccountRef(AccountKind.suspense_gray, "")
    await ledger.post(
        session, PostingRequest("g1", "transfer", DAY, [dr(gray, 70), cr(merchant(2), 70)])
    )
    assert await ledger.balance(session, gray) == -70
    payable = merchant(2, AccountKind.merchant_payable)
    with pytest.raises(InsufficientFunds):
        await ledger.post(
            session, PostingRequest("p1", "payout", DAY, [dr(payable, 1), cr(gray, 1)])
        )


async def test_retry_returns_the_original_and_other_content_conflicts(
    session: AsyncSession,
) -> None:
    first = await ledger.post(session, load("load:7", card(7), 2500))
    await session.commit()
    # entry order does not change the content
    request = load("load:7", card(7), 2500)
    shuffled = PostingRequest(
        request.idempotency_key,
        request.tx_type,
        DAY,
        list(reversed(request.entries)),
        request.record_ref,
    )
    again = await ledger.post(session, shuffled)
    assert again.replayed
    assert again.id == first.id
    assert again.content_hash == first.content_hash
    assert await ledger.balance(session, card(7)) == 2500  # applied once
    with pytest.raises(IdempotencyConflict):
        await ledger.post(session, load("load:7", card(7), 2501))
    with pytest.raises(IdempotencyConflict):
        await ledger.post(session, load("load:7", card(8), 2500))
    assert await _count(session, LedgerTransaction) == 1


async def test_a_retry_after_the_money_is_spent_is_still_a_replay(session: AsyncSession) -> None:
    # The key is looked up only when a posting is refused or its write finds the key taken: a
    # retry whose first attempt spent the whole balance must be answered, not refused.
    await ledger.post(session, load("l", card(3), 500))
    first = await ledger.post(session, purchase_batch("spend", [(card(3), 500)], merchant(3)))
    again = await ledger.post(session, purchase_batch("spend", [(card(3), 500)], merchant(3)))
    assert again.replayed
    assert again.id == first.id
    assert await ledger.balance(session, card(3)) == 0
    with pytest.raises(IdempotencyConflict):  # other content under the key, funds short or not
        await ledger.post(session, purchase_batch("spend", [(card(3), 400)], merchant(3)))
    with pytest.raises(InsufficientFunds):  # a new key is refused as before
        await ledger.post(session, purchase_batch("spend2", [(card(3), 1)], merchant(3)))


async def test_reversal_restores_balances_and_happens_once(session: AsyncSession) -> None:
    await ledger.post(session, load("l1", card(1), 1000))
    sale = await ledger.post(session, purchase_batch("u1", [(card(1), 300)], merchant(1)))
    await session.commit()
    rev = await ledger.reverse(
        session, sale.id, idempotency_key="refund:1", clearing_date=DAY, reason="refund"
    )
    await session.commit()
    assert rev.reverses_id == sale.id
    assert rev.tx_type == "reversal"
    assert rev.amount == 300
    assert rev.record_ref == sale.record_ref
    assert await ledger.balance(session, card(1)) == 1000
    assert await ledger.balance(session, merchant(1)) == 0
    entries = await ledger.transaction_entries(session, rev.id)
    assert {(e.account, e.side, e.amount) for e in entries} == {
        (card(1), Side.credit, 300),
        (merchant(1), Side.debit, 300),
    }
    replay = await ledger.reverse(
        session, sale.id, idempotency_key="refund:1", clearing_date=DAY, reason="x"
    )
    assert replay.replayed
    assert replay.id == rev.id
    with pytest.raises(AlreadyReversed):
        await ledger.reverse(
            session, sale.id, idempotency_key="refund:2", clearing_date=DAY, reason="again"
        )
    with pytest.raises(TransactionNotFound):
        await ledger.reverse(
            session, 987654, idempotency_key="refund:3", clearing_date=DAY, reason="none"
        )
    await session.rollback()
    assert (await ledger.check_invariants(session)).ok


async def test_balance_as_of_a_past_time(session: AsyncSession) -> None:
    await ledger.post(session, load("l1", card(1), 1000))
    await session.commit()
    await asyncio.sleep(0.01)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await ledger.post(session, purchase_batch("u1", [(card(1), 250)], merchant(1)))
    await session.commit()
    assert await ledger.balance(session, card(1), as_of=middle) == 1000
    assert await ledger.balance(session, card(1), as_of=middle - timedelta(days=1)) == 0
    assert await ledger.balance(session, card(1), as_of=datetime.now(UTC)) == 750
    assert await ledger.balance(session, COUNTER, as_of=middle) == 1000
    assert await ledger.balance(session, merchant(1), as_of=middle) == 0
    assert await ledger.balance(session, card(1)) == 750


async def test_check_reports_each_kind_of_corruption(session: AsyncSession) -> None:
    await ledger.post(session, load("l1", card(1), 1000))
    await ledger.post(session, purchase_batch("u1", [(card(1), 400)], merchant(1)))
    await session.commit()
    assert (await ledger.check_invariants(session)).ok

    # a balance edited behind the ledger's back
    await session.execute(
        text(
            "UPDATE ledger_accounts SET balance = balance + 5 WHERE owner_ref = '3211000000000001'"
        )
    )
    report = await ledger.check_invariants(session)
    checks = {v.check for v in report.violations}
    assert checks == {"balances_not_zero", "balance_differs_from_lines"}, report.render()
    assert "FAILED" in report.render()
    await session.rollback()

    # a line edited: the transaction no longer balances, nor does the journal
    await session.execute(
        text(
            "UPDATE ledger_lines SET amount = amount + 1 "
            "WHERE id = (SELECT MIN(id) FROM ledger_lines)"
        )
    )
    checks = {v.check for v in (await ledger.check_invariants(session)).violations}
    assert {"transaction_unbalanced", "journal_not_zero", "balance_differs_from_lines"} <= checks
    await session.rollback()

    # a forbidden negative that still matches its lines (the check constraint is dropped on
    # neither engine, so write lines and balance consistently through the overdraft flag)
    await session.execute(
        text("UPDATE ledger_accounts SET held = 2000 WHERE owner_ref = '3211000000000001'")
    )
    checks = {v.check for v in (await ledger.check_invariants(session)).violations}
    assert checks == {"forbidden_negative", "held_differs_from_holds"}
    await session.rollback()

    # a key that names another day than its transaction's: the transaction cannot be found
    await session.execute(text("UPDATE ledger_transaction_keys SET clearing_date = '2001-01-01'"))
    checks = {v.check for v in (await ledger.check_invariants(session)).violations}
    assert checks == {"key_without_transaction"}
    await session.rollback()
    assert (await ledger.check_invariants(session)).ok


async def test_ensure_account_fixes_side_and_overdraft(session: AsyncSession) -> None:
    ids = {await ledger.ensure_account(session, ref) for ref in (card(1), card(1), COUNTER)}
    assert len(ids) == 2
    rows = (
        await session.execute(
            text("SELECT kind, normal_side, may_go_negative FROM ledger_accounts ORDER BY id")
        )
    ).all()
    assert [(r[0], r[1], bool(r[2])) for r in rows] == [
        ("card_float", "credit", False),
        ("counter_cash", "debit", False),
    ]
