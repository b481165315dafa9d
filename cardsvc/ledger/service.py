"""Ledger service: balanced, idempotent, append-only postings; holds; invariants (DESIGN §10).

A posting is one database transaction (the caller's): lines and balances are written together,
so a crash can never leave one without the other. The service only flushes; the request or job
that opened the session commits.

Concurrency. Every account the posting touches is looked up and locked in ascending id order in
one statement (PostgreSQL ``FOR UPDATE``; SQLite serializes writers with ``BEGIN IMMEDIATE``);
accounts that do not exist yet are inserted (``ON CONFLICT DO NOTHING``) and the whole set is
locked again in id order, so lock waits always follow id order. Only after the locks are held is the
idempotency key looked up: a concurrent duplicate that waited on the locks then sees the winner's
committed transaction and returns it (``replayed=True``) instead of failing. A duplicate key on
disjoint accounts meets ``ON CONFLICT DO NOTHING`` on the key and is resolved the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.ledger import repository as repo
from cardsvc.ledger.errors import (
    AlreadyReversed,
    HoldExpired,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidStateTransition,
    LedgerUnbalanced,
    TransactionNotFound,
)
from cardsvc.ledger.models import HoldStatus, Side
from cardsvc.ledger.schemas import (
    AccountRef,
    Entry,
    Hold,
    InvariantReport,
    PostedTransaction,
    PostingRequest,
    Statement,
    StatementLine,
    Violation,
)

MAX_KEY_LENGTH = 128
MAX_TX_TYPE_LENGTH = 32
MAX_OWNER_REF_LENGTH = 64

# --- validation and content hash ------------------------------------------------------------


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise LedgerUnbalanced(f"idempotency key must have 1..{MAX_KEY_LENGTH} characters")


def _check_amount(amount: Any, what: str) -> int:
    # bool is an int subclass; refuse it along with floats and Decimals (money is integer fen).
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise LedgerUnbalanced(
            f"{what} must be a positive integer number of fen", amount=repr(amount)
        )
    return amount


def _check_ref(ref: AccountRef) -> None:
    if len(ref.owner_ref) > MAX_OWNER_REF_LENGTH:
        raise LedgerUnbalanced(f"owner_ref of {ref.kind} longer than {MAX_OWNER_REF_LENGTH}")


def validate(request: PostingRequest) -> int:
    """Check the request; return its total (Σ debits = Σ credits)."""
    _check_key(request.idempotency_key)
    if not request.tx_type or len(request.tx_type) > MAX_TX_TYPE_LENGTH:
        raise LedgerUnbalanced(f"tx_type must have 1..{MAX_TX_TYPE_LENGTH} characters")
    if not request.entries:
        raise LedgerUnbalanced("a transaction needs entries")
    debits = credits = 0
    for entry in request.entries:
        amount = _check_amount(entry.amount, "entry amount")
        _check_ref(entry.account)
        if entry.side is Side.debit:
            debits += amount
        elif entry.side is Side.credit:
            credits += amount
        else:
            raise LedgerUnbalanced(f"unknown side {entry.side!r}")
    if debits != credits:
        raise LedgerUnbalanced(
            f"debits {debits} != credits {credits}", debits=debits, credits=credits
        )
    return debits


def content_hash(
    request: PostingRequest, *, reverses_id: int | None = None, hold_id: int | None = None
) -> str:
    """SHA-256 of what the transaction books; entry order and description do not count.

    Stored with the idempotency key: same key + same hash is a retry, same key + other hash is a
    conflict (reference/settlement_hsm.md §2.3 item 7).
    """
    entries = sorted(
        (e.account.kind.value, e.account.owner_ref, e.side.value, e.amount) for e in request.entries
    )
    canonical = {
        "type": request.tx_type,
        "clearing_date": request.clearing_date.isoformat(),
        "record_ref": request.record_ref,
        "reverses_id": reverses_id,
        "hold_id": hold_id,
        "entries": entries,
    }
    data = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def _posted(row: repo.TransactionRow, *, replayed: bool) -> PostedTransaction:
    return PostedTransaction(
        id=row.id,
        idempotency_key=row.idempotency_key,
        replayed=replayed,
        tx_type=row.tx_type,
        clearing_date=row.clearing_date,
        amount=row.amount,
        line_count=row.line_count,
        content_hash=row.content_hash,
        posted_at=row.posted_at,
        record_ref=row.record_ref,
        reverses_id=row.reverses_id,
        hold_id=row.hold_id,
    )


def _replay(row: repo.TransactionRow, digest: str) -> PostedTransaction:
    if row.content_hash != digest:
        raise IdempotencyConflict(
            f"idempotency key {row.idempotency_key!r} was used for other content",
            transaction_id=row.id,
        )
    return _posted(row, replayed=True)


# --- accounts -------------------------------------------------------------------------------


async def _resolve_accounts(
    session: AsyncSession, refs: Sequence[AccountRef]
) -> dict[AccountRef, int]:
    """Ids of ``refs``, creating the missing accounts (kind fixes normal side and overdraft)."""
    found = await repo.find_account_ids(session, refs)
    missing = [ref for ref in refs if ref not in found]
    if missing:
        await repo.insert_accounts(session, missing, clock.now())
        found.update(await repo.find_account_ids(session, missing))
    return found


async def ensure_account(session: AsyncSession, ref: AccountRef) -> int:
    """Get or create the account; its kind fixes its normal side and overdraft flag."""
    _check_ref(ref)
    return (await _resolve_accounts(session, [ref]))[ref]


# --- postings -------------------------------------------------------------------------------


async def post(session: AsyncSession, request: PostingRequest) -> PostedTransaction:
    """Post a balanced transaction, or return the original one for a retried key.

    Raises ``LedgerUnbalanced`` (422), ``IdempotencyConflict`` (409) and ``InsufficientFunds``
    (409, nothing written: the caller rolls the database transaction back).
    """
    validate(request)
    return await _post(session, request, content_hash(request))


async def _post(
    session: AsyncSession,
    request: PostingRequest,
    digest: str,
    *,
    reverses_id: int | None = None,
    hold_id: int | None = None,
) -> PostedTransaction:
    refs = sorted({entry.account for entry in request.entries})
    by_ref = await repo.lock_accounts_by_ref(session, refs)
    if len(by_ref) < len(refs):
        # New accounts: created (a concurrent creator wins quietly), then all locked in id order.
        await repo.insert_accounts(session, [r for r in refs if r not in by_ref], clock.now())
        by_ref = await repo.lock_accounts_by_ref(session, refs)

    # A retried key is answered with its first transaction. For a plain posting or a hold's the
    # check waits until it matters (a refusal, the hold no longer pending, or the write finding
    # the key taken): one round trip fewer on every first attempt. A reversal checks first,
    # because its retry would otherwise be refused as already reversed.
    if reverses_id is not None:
        existing = await repo.transaction_by_key(session, request.idempotency_key)
        if existing is not None:
            return _replay(existing, digest)
        reversal = await repo.reversal_of(session, reverses_id)
        if reversal is not None:
            raise AlreadyReversed(
                f"transaction {reverses_id} is already reversed by {reversal}",
                reversal_id=reversal,
            )

    now = clock.now()
    released: dict[int, int] = {}
    hold: repo.HoldRow | None = None
    if hold_id is not None:
        try:
            hold = await _pending_hold(session, hold_id, now)
        except (HoldExpired, InvalidStateTransition):
            # The retry of a posting that already posted the hold (or one whose key was used
            # first) is answered by its key, whatever the hold's state now.
            existing = await repo.transaction_by_key(session, request.idempotency_key)
            if existing is not None:
                return _replay(existing, digest)
            raise
        released[hold.account_id] = hold.amount

    # Per-account change in each account's normal sense, then the overdraft rule on the total:
    # the posting is refused whole if any non-overdraft account would end below its holds.
    delta: dict[int, int] = defaultdict(int)
    line_rows: list[tuple[int, Side, int]] = []
    total = 0
    states = {state.id: state for state in by_ref.values()}
    for entry in request.entries:
        state = by_ref[entry.account]
        account_id = state.id
        delta[account_id] += entry.amount if entry.side is state.normal_side else -entry.amount
        line_rows.append((account_id, entry.side, entry.amount))
        if entry.side is Side.debit:
            total += entry.amount
    short: list[str] = []
    for account_id, change in delta.items():
        state = states[account_id]
        if state.may_go_negative or change >= 0:
            continue
        available_after = state.balance + change - (state.held - released.get(account_id, 0))
        if available_after < 0:
            short.append(
                f"{state.ref}: balance {state.balance}, held {state.held}, change {change}"
            )
    if short:
        existing = await repo.transaction_by_key(session, request.idempotency_key)
        if existing is not None:  # the retry of a posting that already moved the money
            return _replay(existing, digest)
        raise InsufficientFunds("posting refused: " + "; ".join(short), accounts=short)

    changes = {account_id: [change, 0] for account_id, change in delta.items()}
    for account_id, amount in released.items():
        changes.setdefault(account_id, [0, 0])[1] -= amount
    transaction_id = await repo.write_transaction(
        session,
        {
            "idempotency_key": request.idempotency_key,
            "content_hash": digest,
            "tx_type": request.tx_type,
            "clearing_date": request.clearing_date,
            "record_ref": request.record_ref,
            "reverses_id": reverses_id,
            "hold_id": hold_id,
            "amount": total,
            "line_count": len(line_rows),
            "description": request.description[:255],
            "posted_at": now,
        },
        line_rows,
        [(i, c[0], c[1]) for i, c in sorted(changes.items()) if c[0] or c[1]],
        posts_hold=hold is not None,
    )
    if transaction_id is None:
        # The key is taken: a retry, or a concurrent posting on other accounts.
        raced = await repo.transaction_by_key(session, request.idempotency_key)
        if raced is None:  # pragma: no cover - the conflicting insert rolled back; retry is safe
            raise IdempotencyConflict("idempotency key is being used concurrently; retry")
        return _replay(raced, digest)

    return PostedTransaction(
        id=transaction_id,
        idempotency_key=request.idempotency_key,
        replayed=False,
        tx_type=request.tx_type,
        clearing_date=request.clearing_date,
        amount=total,
        line_count=len(line_rows),
        content_hash=digest,
        posted_at=now,
        record_ref=request.record_ref,
        reverses_id=reverses_id,
        hold_id=hold_id,
    )


async def reverse(
    session: AsyncSession,
    transaction_id: int,
    *,
    idempotency_key: str,
    clearing_date: date,
    reason: str,
) -> PostedTransaction:
    """Post the mirror image of a transaction, linked to it; a transaction is reversed once."""
    _check_key(idempotency_key)
    original = await repo.transaction_by_id(session, transaction_id)
    if original is None:
        raise TransactionNotFound(f"transaction {transaction_id} not found")
    entries = [
        Entry(ref, Side.credit if side is Side.debit else Side.debit, amount)
        for ref, side, amount in await repo.transaction_lines(session, original)
    ]
    request = PostingRequest(
        idempotency_key=idempotency_key,
        tx_type="reversal",
        clearing_date=clearing_date,
        entries=entries,
        record_ref=original.record_ref,
        description=reason,
    )
    return await _post(
        session,
        request,
        content_hash(request, reverses_id=transaction_id),
        reverses_id=transaction_id,
    )


async def transaction_entries(session: AsyncSession, transaction_id: int) -> list[Entry]:
    """The lines of a posted transaction, as entries."""
    transaction = await repo.transaction_by_id(session, transaction_id)
    if transaction is None:
        raise TransactionNotFound(f"transaction {transaction_id} not found")
    return [
        Entry(ref, side, amount)
        for ref, side, amount in await repo.transaction_lines(session, transaction)
    ]


# --- balances -------------------------------------------------------------------------------


async def balance(session: AsyncSession, ref: AccountRef, *, as_of: datetime | None = None) -> int:
    """Balance in the account's normal sense; ``as_of`` rebuilds it from lines posted by then."""
    state = await repo.account_state(session, ref)
    if state is None:
        return 0
    account_id, normal_side, current, _held = state
    if as_of is None:
        return current
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    return await repo.balance_as_of(session, account_id, normal_side, as_of)


async def locked_balance(session: AsyncSession, ref: AccountRef) -> int:
    """The account's balance, read under its row lock (held until the caller's transaction ends):
    a posting of this amount in the same transaction moves exactly what is there, whatever
    concurrent postings were doing (0 when the account does not exist yet)."""
    _check_ref(ref)
    state = (await repo.lock_accounts_by_ref(session, [ref])).get(ref)
    return 0 if state is None else state.balance


async def available(session: AsyncSession, ref: AccountRef) -> int:
    """Balance minus pending holds."""
    state = await repo.account_state(session, ref)
    if state is None:
        return 0
    return state[2] - state[3]


async def balance_and_held(session: AsyncSession, ref: AccountRef) -> tuple[int, int]:
    """(balance in the account's normal sense, sum of its pending holds), in one read."""
    state = await repo.account_state(session, ref)
    return (0, 0) if state is None else (state[2], state[3])


MAX_STATEMENT_PAGE = 500


async def statement(
    session: AsyncSession,
    ref: AccountRef,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    after_line_id: int = 0,
    limit: int = 100,
) -> Statement:
    """The account's lines posted in [start, end) after ``after_line_id``, oldest first, each with
    the balance after it (normal sense); page on with ``next_after`` (None on the last page)."""
    for moment in (start, end):
        if moment is not None and moment.tzinfo is None:
            raise ValueError("statement bounds must be timezone-aware")
    limit = max(1, min(limit, MAX_STATEMENT_PAGE))
    state = await repo.account_state(session, ref)
    if state is None:
        return Statement(ref, opening_balance=None, lines=(), next_after=None)
    account_id, normal_side = state[0], state[1]
    rows = await repo.account_lines(
        session, account_id, start=start, end=end, after_line_id=after_line_id, limit=limit + 1
    )
    more, rows = len(rows) > limit, rows[:limit]
    if not rows:
        return Statement(ref, opening_balance=None, lines=(), next_after=None)
    running = opening = await repo.balance_before_line(
        session, account_id, normal_side, rows[0].line_id
    )
    out: list[StatementLine] = []
    for row in rows:
        change = row.amount if row.side is normal_side else -row.amount
        running += change
        out.append(
            StatementLine(
                line_id=row.line_id,
                transaction_id=row.transaction_id,
                tx_type=row.tx_type,
                posted_at=row.posted_at,
                clearing_date=row.clearing_date,
                amount=change,
                balance_after=running,
                description=row.description,
                record_ref=row.record_ref,
            )
        )
    return Statement(ref, opening, tuple(out), out[-1].line_id if more else None)


# --- holds (two-phase: pending -> posted (full or partial) | voided | expired) -----------------


def _hold_hash(
    account: AccountRef,
    counterparty: AccountRef,
    amount: int,
    expires_at: datetime,
    clearing_date: date,
) -> str:
    canonical = [
        account.kind.value,
        account.owner_ref,
        counterparty.kind.value,
        counterparty.owner_ref,
        amount,
        expires_at.timestamp(),
        clearing_date.isoformat(),
    ]
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()


async def _hold_view(session: AsyncSession, row: repo.HoldRow, *, replayed: bool = False) -> Hold:
    refs = await repo.account_refs(session, [row.account_id, row.counterparty_id])
    return Hold(
        id=row.id,
        idempotency_key=row.idempotency_key,
        account=refs[row.account_id],
        counterparty=refs[row.counterparty_id],
        amount=row.amount,
        status=row.status,
        clearing_date=row.clearing_date,
        expires_at=row.expires_at,
        created_at=row.created_at,
        resolved_at=row.resolved_at,
        posted_amount=row.posted_amount,
        transaction_id=row.transaction_id,
        replayed=replayed,
    )


async def get_hold(session: AsyncSession, hold_id: int) -> Hold:
    row = await repo.hold_by_id(session, hold_id)
    if row is None:
        raise HoldNotFound(f"hold {hold_id} not found")
    return await _hold_view(session, row)


async def place_hold(
    session: AsyncSession,
    *,
    idempotency_key: str,
    account: AccountRef,
    amount: int,
    expires_at: datetime,
    counterparty: AccountRef,
    clearing_date: date,
) -> Hold:
    """Reserve ``amount`` of the account's available balance until posted, voided or expired."""
    _check_key(idempotency_key)
    _check_amount(amount, "hold amount")
    _check_ref(account)
    _check_ref(counterparty)
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    if account == counterparty:
        raise LedgerUnbalanced("a hold needs two different accounts")
    digest = _hold_hash(account, counterparty, amount, expires_at, clearing_date)
    state, counterparty_id = await repo.lock_hold_accounts(session, account, counterparty)
    if state is None or counterparty_id is None:
        # New accounts: created (a concurrent creator wins quietly), then found and locked again.
        await _resolve_accounts(session, sorted({account, counterparty}))
        state, counterparty_id = await repo.lock_hold_accounts(session, account, counterparty)
        if state is None or counterparty_id is None:  # pragma: no cover - just created
            raise LedgerUnbalanced("the hold's accounts could not be created")
    # As for postings, a retried key is looked up only when it matters: a refusal, or the insert
    # finding the key taken.
    if not state.may_go_negative and state.balance - state.held < amount:
        existing = await repo.hold_by_key(session, idempotency_key)
        if existing is not None:  # the retry of a hold that already reserved the money
            return await _hold_replay(session, existing, digest)
        raise InsufficientFunds(
            f"hold refused: {account} available {state.balance - state.held} < {amount}"
        )
    now = clock.now()
    hold_id = await repo.place_hold(
        session,
        {
            "idempotency_key": idempotency_key,
            "content_hash": digest,
            "account_id": state.id,
            "counterparty_id": counterparty_id,
            "amount": amount,
            "clearing_date": clearing_date,
            "expires_at": expires_at,
            "created_at": now,
        },
    )
    if hold_id is None:
        raced = await repo.hold_by_key(session, idempotency_key)
        if raced is None:  # pragma: no cover
            raise IdempotencyConflict("idempotency key is being used concurrently; retry")
        return await _hold_replay(session, raced, digest)
    return Hold(
        id=hold_id,
        idempotency_key=idempotency_key,
        account=account,
        counterparty=counterparty,
        amount=amount,
        status=HoldStatus.pending,
        clearing_date=clearing_date,
        expires_at=expires_at,
        created_at=now,
    )


async def _hold_replay(session: AsyncSession, row: repo.HoldRow, digest: str) -> Hold:
    if row.content_hash != digest:
        raise IdempotencyConflict(
            f"idempotency key {row.idempotency_key!r} was used for another hold", hold_id=row.id
        )
    return await _hold_view(session, row, replayed=True)


async def _pending_hold(session: AsyncSession, hold_id: int, now: datetime) -> repo.HoldRow:
    """The hold, re-read under its account's lock; refuses one that is resolved or expired."""
    hold = await repo.hold_by_id(session, hold_id)
    if hold is None:
        raise HoldNotFound(f"hold {hold_id} not found")
    if hold.status is HoldStatus.expired or (
        hold.status is HoldStatus.pending and hold.expires_at <= now
    ):
        raise HoldExpired(f"hold {hold_id} expired at {hold.expires_at.isoformat()}")
    if hold.status is not HoldStatus.pending:
        raise InvalidStateTransition(f"hold {hold_id} is already {hold.status}")
    return hold


async def post_hold(
    session: AsyncSession,
    hold_id: int,
    amount: int,
    *,
    idempotency_key: str,
    clearing_date: date,
    tx_type: str = "hold_post",
    record_ref: str | None = None,
) -> PostedTransaction:
    """Post ``amount`` (≤ the hold) from the held account to the counterparty; release the rest.

    ``tx_type`` and ``record_ref`` name what the posting books (default: a plain hold posting of
    ``hold:<id>``), so that a day's totals can tell a fuel completion from a counter withdrawal."""
    _check_key(idempotency_key)
    _check_amount(amount, "posted amount")
    found = await repo.hold_with_refs(session, hold_id)
    if found is None:
        raise HoldNotFound(f"hold {hold_id} not found")
    row, account, counterparty = found
    if amount > row.amount:
        raise InvalidStateTransition(f"cannot post {amount} from a hold of {row.amount}")
    request = PostingRequest(
        idempotency_key=idempotency_key,
        tx_type=tx_type,
        clearing_date=clearing_date,
        entries=[Entry(account, Side.debit, amount), Entry(counterparty, Side.credit, amount)],
        record_ref=record_ref or f"hold:{hold_id}",
    )
    return await _post(session, request, content_hash(request, hold_id=hold_id), hold_id=hold_id)


async def void_hold(session: AsyncSession, hold_id: int, *, reason: str) -> None:
    """Release a pending hold; a voided or expired one is left alone, a posted one refuses."""
    row = await repo.hold_by_id(session, hold_id)
    if row is None:
        raise HoldNotFound(f"hold {hold_id} not found")
    await repo.lock_accounts(session, [row.account_id])
    row = await repo.hold_by_id(session, hold_id)  # re-read under the account lock
    assert row is not None  # noqa: S101 - holds are never deleted
    if row.status is HoldStatus.posted:
        raise InvalidStateTransition(f"hold {hold_id} is already posted")
    if row.status is not HoldStatus.pending:
        return
    await repo.resolve_holds(
        session, [hold_id], HoldStatus.voided, clock.now(), reason=reason[:255]
    )
    await repo.apply_deltas(session, [(row.account_id, 0, -row.amount)])


async def expire_holds(session: AsyncSession, now: datetime) -> int:
    """Release every pending hold whose expiry is at or before ``now``; return how many."""
    candidates = await repo.expired_pending_holds(session, now)
    if not candidates:
        return 0
    await repo.lock_accounts(session, [h.account_id for h in candidates])
    rows = [
        h
        for h in await repo.holds_by_ids(session, [h.id for h in candidates])
        if h.status is HoldStatus.pending and h.expires_at <= now
    ]
    if not rows:
        return 0
    released: dict[int, int] = defaultdict(int)
    for h in rows:
        released[h.account_id] -= h.amount
    await repo.resolve_holds(
        session, [h.id for h in rows], HoldStatus.expired, now, reason="expired"
    )
    await repo.apply_deltas(session, [(i, 0, d) for i, d in sorted(released.items())])
    return len(rows)


# --- invariants -----------------------------------------------------------------------------


async def check_invariants(session: AsyncSession) -> InvariantReport:
    """Invariants 1-5 of reference/settlement_hsm.md §2.3 over the whole ledger.

    Every transaction balances (and matches its stored amount and line count) and is found from
    its key on the clearing date the key names, the journal and
    all balances net to zero, each balance equals its lines, each account's holds equal its
    pending holds, and no non-overdraft account is negative (or below its holds).
    """
    n_accounts, n_transactions, n_lines, n_pending = await repo.counts(session)
    violations: list[Violation] = []
    for tx_id, amount, line_count, debits, credits, n in await repo.unbalanced_transactions(
        session
    ):
        violations.append(
            Violation(
                "transaction_unbalanced",
                f"tx:{tx_id}",
                f"amount {amount}, lines {n}/{line_count}, debits {debits}, credits {credits}",
            )
        )
    for key, transaction_id, clearing_date in await repo.keys_without_transaction(session):
        violations.append(
            Violation(
                "key_without_transaction",
                f"tx:{transaction_id}",
                f"key {key!r} points to no transaction on {clearing_date.isoformat()}",
            )
        )
    debits, credits = await repo.journal_totals(session)
    if debits != credits:
        violations.append(
            Violation("journal_not_zero", "ledger", f"debits {debits} != credits {credits}")
        )
    total = await repo.signed_total(session)
    if total != 0:
        violations.append(
            Violation("balances_not_zero", "ledger", f"Σ balances (debit-positive) = {total}")
        )
    for ref, stored, expected in await repo.balances_differing_from_lines(session):
        violations.append(
            Violation(
                "balance_differs_from_lines", f"account:{ref}", f"stored {stored}, lines {expected}"
            )
        )
    for ref, held, expected in await repo.held_differing_from_holds(session):
        violations.append(
            Violation(
                "held_differs_from_holds",
                f"account:{ref}",
                f"held {held}, pending holds {expected}",
            )
        )
    for ref, bal, held in await repo.forbidden_negatives(session):
        violations.append(
            Violation("forbidden_negative", f"account:{ref}", f"balance {bal}, held {held}")
        )
    return InvariantReport(
        accounts=n_accounts,
        transactions=n_transactions,
        lines=n_lines,
        pending_holds=n_pending,
        signed_total=total,
        violations=tuple(violations),
    )
