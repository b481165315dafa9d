"""Property test: random sequences of postings, holds, reversals and retries against an
independent in-memory model; every invariant holds after every step (reference §2.5)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc.errors import DomainError
from cardsvc.ledger import service as ledger
from cardsvc.ledger.errors import (
    AlreadyReversed,
    HoldExpired,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidStateTransition,
)
from cardsvc.ledger.models import KIND_RULES, AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from tests.cardsvc.ledger.helpers import DAY

N_CARDS = 4
N_MERCHANTS = 2

amounts = st.integers(min_value=1, max_value=3000)
ops = st.one_of(
    st.tuples(st.just("load"), st.integers(0, N_CARDS - 1), amounts),
    st.tuples(
        st.just("buy"),
        st.lists(st.tuples(st.integers(0, N_CARDS - 1), amounts), min_size=1, max_size=4),
        st.integers(0, N_MERCHANTS - 1),
    ),
    st.tuples(st.just("settle"), st.integers(0, N_MERCHANTS - 1), st.integers(0, 50)),
    st.tuples(st.just("reverse"), st.integers(0, 50)),
    st.tuples(st.just("retry"), st.integers(0, 50)),
    st.tuples(st.just("conflict"), st.integers(0, 50)),
    st.tuples(st.just("hold"), st.integers(0, N_CARDS - 1), amounts, st.booleans()),
    st.tuples(st.just("post_hold"), st.integers(0, 50), st.integers(1, 100)),
    st.tuples(st.just("void_hold"), st.integers(0, 50)),
    st.tuples(st.just("expire")),
)


@dataclass
class ModelHold:
    id: int
    account: AccountRef
    amount: int
    expires_at: datetime
    status: str = "pending"


@dataclass
class Model:
    """The expected ledger, computed without the database."""

    balance: dict[AccountRef, int] = field(default_factory=dict)
    held: dict[AccountRef, int] = field(default_factory=dict)
    posted: list[tuple[PostingRequest, int]] = field(default_factory=list)
    entries: dict[int, list[Entry]] = field(default_factory=dict)
    reversed: set[int] = field(default_factory=set)
    holds: list[ModelHold] = field(default_factory=list)

    def change(self, entries: list[Entry]) -> dict[AccountRef, int]:
        delta: dict[AccountRef, int] = {}
        for e in entries:
            sign = 1 if e.side is KIND_RULES[e.account.kind].normal_side else -1
            delta[e.account] = delta.get(e.account, 0) + sign * e.amount
        return delta

    def allows(self, entries: list[Entry], release: tuple[AccountRef, int] | None = None) -> bool:
        for ref, d in self.change(entries).items():
            if KIND_RULES[ref.kind].may_go_negative or d >= 0:
                continue
            held = self.held.get(ref, 0) - (release[1] if release and release[0] == ref else 0)
            if self.balance.get(ref, 0) + d - held < 0:
                return False
        return True

    def apply(self, entries: list[Entry]) -> None:
        for ref, d in self.change(entries).items():
            self.balance[ref] = self.balance.get(ref, 0) + d


def _flip(entries: list[Entry]) -> list[Entry]:
    return [
        Entry(e.account, Side.credit if e.side is Side.debit else Side.debit, e.amount)
        for e in entries
    ]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(ops, min_size=1, max_size=14))
async def test_random_sequences_keep_invariants_and_match_the_model(
    sessions: async_sessionmaker[AsyncSession], steps: list[tuple[Any, ...]]
) -> None:
    run = uuid.uuid4().hex[:8]  # each example uses its own accounts and keys in the shared db
    cards = [AccountRef(AccountKind.card_float, f"{run}-c{i}") for i in range(N_CARDS)]
    pending = [AccountRef(AccountKind.merchant_pending, f"{run}-m{j}") for j in range(N_MERCHANTS)]
    payable = [AccountRef(AccountKind.merchant_payable, f"{run}-m{j}") for j in range(N_MERCHANTS)]
    counter = AccountRef(AccountKind.counter_cash, f"{run}-counter")
    fees = AccountRef(AccountKind.fee_income, f"{run}-fees")
    biller = AccountRef(AccountKind.biller_payable, f"{run}-biller")
    model = Model()
    watched = [*cards, *pending, *payable, counter, fees, biller]

    async with sessions() as session:
        for n, step in enumerate(steps):
            key = f"{run}:{n}"
            kind = step[0]
            expected_error: type[DomainError] | None = None
            try:
                if kind in ("load", "buy", "settle"):
                    if kind == "load":
                        entries = [
                            Entry(counter, Side.debit, step[2]),
                            Entry(cards[step[1]], Side.credit, step[2]),
                        ]
                    elif kind == "buy":
                        entries = [Entry(cards[i], Side.debit, a) for i, a in step[1]]
                        entries.append(
                            Entry(pending[step[2]], Side.credit, sum(a for _, a in step[1]))
                        )
                    else:
                        gross = model.balance.get(pending[step[1]], 0)
                        if gross <= 0:
                            continue
                        fee = min(step[2], gross)
                        entries = [Entry(pending[step[1]], Side.debit, gross)]
                        if gross - fee:
                            entries.append(Entry(payable[step[1]], Side.credit, gross - fee))
                        if fee:
                            entries.append(Entry(fees, Side.credit, fee))
                    request = PostingRequest(key, kind, DAY, entries)
                    expected_error = None if model.allows(entries) else InsufficientFunds
                    tx = await ledger.post(session, request)
                    assert not tx.replayed
                    model.apply(entries)
                    model.posted.append((request, tx.id))
                    model.entries[tx.id] = entries
                elif kind == "reverse":
                    if not model.posted:
                        continue
                    _, tx_id = model.posted[step[1] % len(model.posted)]
                    flipped = _flip(model.entries[tx_id])
                    if tx_id in model.reversed:
                        expected_error = AlreadyReversed
                    elif not model.allows(flipped):
                        expected_error = InsufficientFunds
                    tx = await ledger.reverse(
                        session, tx_id, idempotency_key=key, clearing_date=DAY, reason="p"
                    )
                    model.apply(flipped)
                    model.reversed.add(tx_id)
                    model.posted.append((PostingRequest(key, "reversal", DAY, flipped), tx.id))
                    model.entries[tx.id] = flipped
                elif kind in ("retry", "conflict"):
                    candidates = [(r, t) for r, t in model.posted if r.tx_type != "reversal"]
                    if not candidates:
                        continue
                    request, tx_id = candidates[step[1] % len(candidates)]
                    if kind == "conflict":
                        first = request.entries[0]
                        bumped = [
                            Entry(first.account, first.side, first.amount + 1),
                            *request.entries[1:],
                        ]
                        request = PostingRequest(
                            request.idempotency_key,
                            request.tx_type,
                            DAY,
                            [*bumped, Entry(counter, Side.credit, 1)]
                            if first.side is Side.debit
                            else [*bumped, Entry(counter, Side.debit, 1)],
                        )
                        expected_error = IdempotencyConflict
                    tx = await ledger.post(session, request)
                    assert tx.replayed
                    assert tx.id == tx_id
                elif kind == "hold":
                    ref, amount, stale = cards[step[1]], step[2], step[3]
                    available = model.balance.get(ref, 0) - model.held.get(ref, 0)
                    expected_error = None if available >= amount else InsufficientFunds
                    expires = datetime.now(UTC) + (
                        timedelta(seconds=-1) if stale else timedelta(hours=1)
                    )
                    hold = await ledger.place_hold(
                        session, idempotency_key=key, account=ref, amount=amount,
                        expires_at=expires, counterparty=biller, clearing_date=DAY,
                    )  # fmt: skip
                    model.holds.append(ModelHold(hold.id, ref, amount, expires))
                    model.held[ref] = model.held.get(ref, 0) + amount
                elif kind in ("post_hold", "void_hold"):
                    if not model.holds:
                        continue
                    mh = model.holds[step[1] % len(model.holds)]
                    now = datetime.now(UTC)
                    if kind == "void_hold":
                        if mh.status == "posted":
                            expected_error = InvalidStateTransition
                        await ledger.void_hold(session, mh.id, reason="p")
                        if mh.status == "pending":
                            mh.status = "voided"
                            model.held[mh.account] -= mh.amount
                    else:
                        amount = max(1, mh.amount * step[2] // 100)
                        entries = [
                            Entry(mh.account, Side.debit, amount),
                            Entry(biller, Side.credit, amount),
                        ]
                        if mh.status == "expired" or (
                            mh.status == "pending" and mh.expires_at <= now
                        ):
                            expected_error = HoldExpired
                        elif mh.status != "pending":
                            expected_error = InvalidStateTransition
                        await ledger.post_hold(
                            session, mh.id, amount, idempotency_key=key, clearing_date=DAY
                        )
                        assert model.allows(
                            entries, (mh.account, mh.amount)
                        )  # a hold is always postable
                        model.apply(entries)
                        model.held[mh.account] -= mh.amount
                        mh.status = "posted"
                else:  # expire
                    now = datetime.now(UTC)
                    due = [h for h in model.holds if h.status == "pending" and h.expires_at <= now]
                    count = await ledger.expire_holds(session, now)
                    # holds of earlier examples in the shared database may expire too
                    assert count >= len(due)
                    for h in due:
                        h.status = "expired"
                        model.held[h.account] -= h.amount
            except DomainError as exc:
                refused: DomainError | None = exc
                await session.rollback()
            else:
                refused = None
                await session.commit()
            # a refusal must be exactly the one the model predicts, and only then
            if expected_error is None:
                assert refused is None, (step, refused)
            else:
                assert isinstance(refused, expected_error), (step, "expected", expected_error)

            report = await ledger.check_invariants(session)
            assert report.ok, report.render()
            for ref in watched:
                assert await ledger.balance(session, ref) == model.balance.get(ref, 0), (step, ref)
                assert await ledger.available(session, ref) == model.balance.get(
                    ref, 0
                ) - model.held.get(ref, 0), (step, ref)
            await session.commit()
