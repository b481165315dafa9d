"""All ledger SQL. PostgreSQL paths use arrays (``= ANY``, ``unnest``) so that a posting of 500
entries is a handful of statements whatever its size; SQLite uses executemany in-process.

Row locks: ``lock_accounts`` takes ``FOR UPDATE`` locks in ascending id order in one statement,
so two postings that share accounts queue instead of deadlocking. SQLite has no row locks; its
writers are serialized by ``BEGIN IMMEDIATE`` (``cardsvc.db``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Table, bindparam, case, func, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.ledger.models import (
    KIND_RULES,
    AccountKind,
    HoldStatus,
    LedgerAccount,
    LedgerHold,
    LedgerLine,
    LedgerTransaction,
    LedgerTransactionKey,
    Side,
)
from cardsvc.ledger.schemas import AccountRef
from cardsvc.pgdirect import Query
from cardsvc.sql import dialect_insert

accounts = LedgerAccount.__table__
keys = LedgerTransactionKey.__table__
transactions: Table = LedgerTransaction.__table__  # type: ignore[assignment]
lines: Table = LedgerLine.__table__  # type: ignore[assignment]
holds = LedgerHold.__table__


@dataclass(slots=True)
class AccountState:
    id: int
    ref: AccountRef
    normal_side: Side
    may_go_negative: bool
    balance: int
    held: int


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# --- accounts -------------------------------------------------------------------------------


# PostgreSQL: the accounts named by parallel arrays of kinds and owners (see _ref_arrays), found
# through their unique (kind, owner_ref) index.
_FROM_REFS_PG = (
    "FROM ledger_accounts AS a "
    "JOIN unnest(CAST(:kinds AS VARCHAR[]), CAST(:owners AS VARCHAR[])) AS r(kind, owner_ref) "
    "ON a.kind = r.kind AND a.owner_ref = r.owner_ref"
)
_FIND_BY_REF_PG = Query(lambda _dialect: text(f"SELECT a.id, a.kind, a.owner_ref {_FROM_REFS_PG}"))


def _ref_arrays(refs: Sequence[AccountRef]) -> dict[str, list[str]]:
    return {"kinds": [r.kind.value for r in refs], "owners": [r.owner_ref for r in refs]}


async def find_account_ids(
    session: AsyncSession, refs: Iterable[AccountRef]
) -> dict[AccountRef, int]:
    """Ids of the accounts that exist among ``refs`` (no locks), in one statement."""
    refs = list(refs)
    found: dict[AccountRef, int] = {}
    if not refs:
        return found
    if is_postgres(session):
        for account_id, kind, owner_ref in await _FIND_BY_REF_PG.rows(session, _ref_arrays(refs)):
            found[AccountRef(AccountKind(kind), owner_ref)] = int(account_id)
        return found
    by_kind: dict[AccountKind, list[str]] = {}
    for ref in refs:
        by_kind.setdefault(ref.kind, []).append(ref.owner_ref)
    for kind, owners in by_kind.items():
        result = await session.execute(
            select(accounts.c.id, accounts.c.owner_ref).where(
                accounts.c.kind == kind, accounts.c.owner_ref.in_(owners)
            )
        )
        for account_id, owner_ref in result:
            found[AccountRef(kind, owner_ref)] = int(account_id)
    return found


async def insert_accounts(session: AsyncSession, refs: Sequence[AccountRef], now: datetime) -> None:
    """Create accounts; one created concurrently by another transaction is left alone.

    Rows go in sorted (kind, owner_ref) order, so two postings creating the same new accounts
    wait on the first shared one instead of holding one each (no deadlock).
    """
    rows = [
        {
            "kind": ref.kind,
            "owner_ref": ref.owner_ref,
            "normal_side": KIND_RULES[ref.kind].normal_side,
            "may_go_negative": KIND_RULES[ref.kind].may_go_negative,
            "balance": 0,
            "held": 0,
            "created_at": now,
        }
        for ref in sorted(refs)
    ]
    stmt = (
        dialect_insert(session.get_bind().dialect.name, accounts)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["kind", "owner_ref"])
    )
    await session.execute(stmt)


async def lock_accounts(session: AsyncSession, ids: Iterable[int]) -> dict[int, AccountState]:
    """Lock the accounts (ascending id order) and read their current balances."""
    ordered = sorted(set(ids))
    if is_postgres(session):
        result: Iterable[Any] = await _LOCK_BY_ID_PG.rows(session, {"ids": ordered})
    else:
        result = await session.execute(
            select(
                accounts.c.id,
                accounts.c.kind,
                accounts.c.owner_ref,
                accounts.c.normal_side,
                accounts.c.may_go_negative,
                accounts.c.balance,
                accounts.c.held,
            )
            .where(accounts.c.id.in_(ordered))
            .order_by(accounts.c.id)
        )
    return {row[0]: _account_state(row) for row in result}


_LOCK_BY_ID_PG = Query(
    lambda _dialect: text(
        "SELECT id, kind, owner_ref, normal_side, may_go_negative, balance, held "
        "FROM ledger_accounts WHERE id = ANY(CAST(:ids AS BIGINT[])) ORDER BY id FOR UPDATE"
    )
)


def _account_state(row: Any) -> AccountState:
    return AccountState(
        id=row[0],
        ref=AccountRef(AccountKind(row[1]), row[2]),
        normal_side=Side(row[3]),
        may_go_negative=bool(row[4]),
        balance=int(row[5]),
        held=int(row[6]),
    )


_LOCK_BY_REF_PG = Query(
    lambda _dialect: text(
        "SELECT a.id, a.kind, a.owner_ref, a.normal_side, a.may_go_negative, a.balance, a.held "
        f"{_FROM_REFS_PG} ORDER BY a.id FOR UPDATE OF a"
    )
)


async def lock_accounts_by_ref(
    session: AsyncSession, refs: Sequence[AccountRef]
) -> dict[AccountRef, AccountState]:
    """Lock the accounts that exist among ``refs`` (ascending id order) and read their balances,
    in one statement: what :func:`find_account_ids` and :func:`lock_accounts` do in two."""
    if is_postgres(session):
        rows = await _LOCK_BY_REF_PG.rows(session, _ref_arrays(refs))
        states = [_account_state(row) for row in rows]
    else:
        ids = await find_account_ids(session, refs)
        states = list((await lock_accounts(session, ids.values())).values())
    return {state.ref: state for state in states}


_LOCK_HOLD_ACCOUNTS_PG = Query(
    lambda _dialect: text(
        "WITH held AS ("
        " SELECT a.id, a.kind, a.owner_ref, a.normal_side, a.may_go_negative, a.balance, a.held"
        " FROM ledger_accounts AS a WHERE a.kind = :kind AND a.owner_ref = :owner FOR UPDATE"
        ") SELECT * FROM held UNION ALL"
        " SELECT c.id, c.kind, c.owner_ref, c.normal_side, c.may_go_negative, c.balance, c.held"
        " FROM ledger_accounts AS c WHERE c.kind = :counter_kind AND c.owner_ref = :counter_owner"
    )
)


async def lock_hold_accounts(
    session: AsyncSession, account: AccountRef, counterparty: AccountRef
) -> tuple[AccountState | None, int | None]:
    """The held account, locked (with its balances), and the counterparty's id (not locked): the
    accounts of a new hold, in one statement on PostgreSQL; None for one that does not exist."""
    if is_postgres(session):
        params = {
            "kind": account.kind.value, "owner": account.owner_ref,
            "counter_kind": counterparty.kind.value, "counter_owner": counterparty.owner_ref,
        }  # fmt: skip
        states = [_account_state(row) for row in await _LOCK_HOLD_ACCOUNTS_PG.rows(session, params)]
        by_ref = {state.ref: state for state in states}
        held, other = by_ref.get(account), by_ref.get(counterparty)
        return held, None if other is None else other.id
    ids = await find_account_ids(session, [account, counterparty])
    held_id = ids.get(account)
    locked = None if held_id is None else (await lock_accounts(session, [held_id]))[held_id]
    return locked, ids.get(counterparty)


# The key row first: its primary key decides a race on the idempotency key (ON CONFLICT DO
# NOTHING: nothing else is written), and the transaction id is allocated with it.
_WRITE_TRANSACTION_SQL = (
    "WITH k AS ("
    " INSERT INTO ledger_transaction_keys (idempotency_key, transaction_id, clearing_date,"
    " content_hash, reverses_id)"
    " VALUES (:idempotency_key, nextval('ledger_transaction_ids'), :clearing_date,"
    " :content_hash, :reverses_id)"
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING transaction_id"
    "), tx AS ("
    " INSERT INTO ledger_transactions (id, tx_type, clearing_date, record_ref, hold_id,"
    " amount, line_count, description, posted_at)"
    " SELECT k.transaction_id, :tx_type, :clearing_date, :record_ref, :hold_id, :amount,"
    " :line_count, :description, :posted_at FROM k RETURNING id"
    "), written_lines AS ("
    " INSERT INTO ledger_lines (clearing_date, transaction_id, account_id, side, amount)"
    " SELECT :clearing_date, tx.id, u.a, u.s, u.m FROM tx,"
    " unnest(CAST(:line_accounts AS BIGINT[]), CAST(:line_sides AS VARCHAR[]),"
    " CAST(:line_amounts AS BIGINT[])) AS u(a, s, m)"
    "), moved AS ("
    " UPDATE ledger_accounts AS a SET balance = a.balance + d.db, held = a.held + d.dh"
    " FROM unnest(CAST(:delta_ids AS BIGINT[]), CAST(:delta_balances AS BIGINT[]),"
    " CAST(:delta_held AS BIGINT[])) AS d(id, db, dh)"
    " WHERE a.id = d.id AND EXISTS (SELECT 1 FROM tx)"
    ")"
)
# Both are made of the constants here: nothing of a request is formatted into their SQL.
_WRITE_TRANSACTION_PG = Query(
    lambda _dialect: text(f"{_WRITE_TRANSACTION_SQL} SELECT id FROM tx")  # noqa: S608
)
# A hold's posting also marks the hold posted by the new transaction (callers hold its account's
# lock and saw it pending).
_RESOLVE_POSTED_HOLD = (
    ", resolved AS ("
    " UPDATE ledger_holds SET status = 'posted', resolved_at = :posted_at,"
    " posted_amount = :amount, transaction_id = tx.id, reason = NULL"
    " FROM tx WHERE ledger_holds.id = :hold_id AND ledger_holds.status = 'pending'"
    ")"
)
_WRITE_HOLD_POSTING_PG = Query(
    lambda _dialect: text(
        f"{_WRITE_TRANSACTION_SQL}{_RESOLVE_POSTED_HOLD} SELECT id FROM tx"  # noqa: S608
    )
)


async def write_transaction(
    session: AsyncSession,
    values: dict[str, Any],
    line_rows: Sequence[tuple[int, Side, int]],
    deltas: Sequence[tuple[int, int, int]],
    *,
    posts_hold: bool = False,
) -> int | None:
    """Insert a transaction (its key, header and lines) and its balance changes (callers hold the
    row locks); None, with nothing written, when the idempotency key was taken (e.g. concurrently).
    With ``posts_hold`` the pending hold ``values["hold_id"]`` is marked posted by it, for the
    transaction's amount.

    On PostgreSQL one statement of data-modifying CTEs, so a first posting is two round trips
    (lock, write) whatever its size; SQLite runs the steps one after another.
    """
    if not is_postgres(session):
        transaction_id = await insert_transaction(session, values)
        if transaction_id is not None:
            await insert_lines(session, transaction_id, values["clearing_date"], line_rows)
            await apply_deltas(session, deltas)
            if posts_hold:
                await resolve_holds(
                    session, [values["hold_id"]], HoldStatus.posted, values["posted_at"],
                    posted_amount=values["amount"], transaction_id=transaction_id,
                )  # fmt: skip
        return transaction_id
    params = {
        **{name: values[name] for name in _WRITTEN},
        "line_accounts": [r[0] for r in line_rows],
        "line_sides": [r[1].value for r in line_rows],
        "line_amounts": [r[2] for r in line_rows],
        "delta_ids": [d[0] for d in deltas],
        "delta_balances": [d[1] for d in deltas],
        "delta_held": [d[2] for d in deltas],
    }
    query = _WRITE_HOLD_POSTING_PG if posts_hold else _WRITE_TRANSACTION_PG
    value = await query.scalar(session, params)
    return None if value is None else int(value)


_KEY_COLUMNS = ("idempotency_key", "clearing_date", "content_hash", "reverses_id")
_HEADER_COLUMNS = (
    "tx_type", "clearing_date", "record_ref", "hold_id", "amount", "line_count", "description",
    "posted_at",
)  # fmt: skip
_WRITTEN = frozenset(_KEY_COLUMNS) | frozenset(_HEADER_COLUMNS)


_APPLY_DELTAS_PG = Query(
    lambda _dialect: text(
        "UPDATE ledger_accounts AS a SET balance = a.balance + d.db, held = a.held + d.dh "
        "FROM unnest(CAST(:ids AS BIGINT[]), CAST(:db AS BIGINT[]), CAST(:dh AS BIGINT[])) "
        "AS d(id, db, dh) WHERE a.id = d.id"
    )
)


async def apply_deltas(session: AsyncSession, deltas: Sequence[tuple[int, int, int]]) -> None:
    """Add (balance delta, held delta) to each account id; callers hold the row locks."""
    if not deltas:
        return
    if is_postgres(session):
        params = {
            "ids": [d[0] for d in deltas],
            "db": [d[1] for d in deltas],
            "dh": [d[2] for d in deltas],
        }
        await _APPLY_DELTAS_PG.rows(session, params)
        return
    stmt = text(
        "UPDATE ledger_accounts SET balance = balance + :db, held = held + :dh WHERE id = :id"
    )
    await session.execute(stmt, [{"id": i, "db": db, "dh": dh} for i, db, dh in deltas])


async def account_state(
    session: AsyncSession, ref: AccountRef
) -> tuple[int, Side, int, int] | None:
    """(id, normal side, balance, held) of an account, or None when it does not exist."""
    row = (
        await session.execute(
            select(
                accounts.c.id, accounts.c.normal_side, accounts.c.balance, accounts.c.held
            ).where(accounts.c.kind == ref.kind, accounts.c.owner_ref == ref.owner_ref)
        )
    ).first()
    if row is None:
        return None
    return int(row[0]), Side(row[1]), int(row[2]), int(row[3])


async def account_refs(session: AsyncSession, ids: Sequence[int]) -> dict[int, AccountRef]:
    rows = await session.execute(
        select(accounts.c.id, accounts.c.kind, accounts.c.owner_ref).where(accounts.c.id.in_(ids))
    )
    return {int(r[0]): AccountRef(AccountKind(r[1]), r[2]) for r in rows}


async def balance_as_of(
    session: AsyncSession, account_id: int, normal_side: Side, as_of: datetime
) -> int:
    signed = case((lines.c.side == normal_side.value, lines.c.amount), else_=-lines.c.amount)
    value = await session.scalar(
        select(func.coalesce(func.sum(signed), 0))
        .select_from(
            lines.join(
                transactions,
                (transactions.c.clearing_date == lines.c.clearing_date)
                & (transactions.c.id == lines.c.transaction_id),
            )
        )
        .where(lines.c.account_id == account_id, transactions.c.posted_at <= as_of)
    )
    return int(value or 0)


# --- transactions and lines -----------------------------------------------------------------
#
# A transaction is found through its key row (not partitioned), then read from its day's
# partition with the clearing date as a bound value: PostgreSQL prunes to that one partition when
# the statement starts. A join would plan every partition and sort them out row by row.


@dataclass(frozen=True, slots=True)
class TransactionRow:
    id: int
    idempotency_key: str
    content_hash: str
    tx_type: str
    clearing_date: date
    amount: int
    line_count: int
    posted_at: datetime
    record_ref: str | None
    reverses_id: int | None
    hold_id: int | None


_KEY_ROW = (
    keys.c.idempotency_key,
    keys.c.transaction_id,
    keys.c.clearing_date,
    keys.c.content_hash,
    keys.c.reverses_id,
)
_KEY_BY_KEY = Query(
    lambda _dialect: select(*_KEY_ROW).where(keys.c.idempotency_key == bindparam("key"))
)
_KEY_BY_ID = Query(
    lambda _dialect: select(*_KEY_ROW).where(keys.c.transaction_id == bindparam("id"))
)
_HEADER = Query(
    lambda _dialect: select(
        transactions.c.tx_type,
        transactions.c.amount,
        transactions.c.line_count,
        transactions.c.posted_at,
        transactions.c.record_ref,
        transactions.c.hold_id,
    ).where(
        transactions.c.clearing_date == bindparam("clearing_date"),
        transactions.c.id == bindparam("id"),
    )
)


async def _transaction(session: AsyncSession, key_row: Any) -> TransactionRow:
    key, transaction_id, clearing_date, content_hash, reverses_id = key_row
    header = await _HEADER.first(session, {"clearing_date": clearing_date, "id": transaction_id})
    if header is None:  # pragma: no cover - the key and its transaction are written together
        raise LookupError(f"transaction {transaction_id} has a key but no row")
    tx_type, amount, line_count, posted_at, record_ref, hold_id = header
    return TransactionRow(
        id=int(transaction_id),
        idempotency_key=key,
        content_hash=content_hash,
        tx_type=tx_type,
        clearing_date=clearing_date,
        amount=int(amount),
        line_count=int(line_count),
        posted_at=_utc(posted_at),
        record_ref=record_ref,
        reverses_id=reverses_id,
        hold_id=hold_id,
    )


def _utc(value: datetime) -> datetime:
    # SQLite returns naive text-parsed datetimes through a direct query; the column stores UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def transaction_by_key(session: AsyncSession, key: str) -> TransactionRow | None:
    row = await _KEY_BY_KEY.first(session, {"key": key})
    return None if row is None else await _transaction(session, row)


async def transaction_by_id(session: AsyncSession, transaction_id: int) -> TransactionRow | None:
    row = await _KEY_BY_ID.first(session, {"id": transaction_id})
    return None if row is None else await _transaction(session, row)


async def reversal_of(session: AsyncSession, transaction_id: int) -> int | None:
    value = await session.scalar(
        select(keys.c.transaction_id).where(keys.c.reverses_id == transaction_id)
    )
    return None if value is None else int(value)


async def insert_transaction(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """Insert a transaction's key and header (SQLite; PostgreSQL writes them inside
    :func:`write_transaction`'s one statement); None when its idempotency key was taken.

    SQLite serializes writers (``BEGIN IMMEDIATE``), so the next id is simply one past the last.
    """
    next_id = select(func.coalesce(func.max(keys.c.transaction_id), 0) + 1).scalar_subquery()
    stmt = (
        dialect_insert(session.get_bind().dialect.name, keys)
        .values(transaction_id=next_id, **{name: values[name] for name in _KEY_COLUMNS})
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(keys.c.transaction_id)
    )
    value = (await session.execute(stmt)).scalar()
    if value is None:
        return None
    transaction_id = int(value)
    await session.execute(
        transactions.insert().values(id=transaction_id, **{n: values[n] for n in _HEADER_COLUMNS})
    )
    return transaction_id


async def insert_lines(
    session: AsyncSession,
    transaction_id: int,
    clearing_date: date,
    rows: Sequence[tuple[int, Side, int]],
) -> None:
    """Insert the lines (account id, side, amount) of one transaction (SQLite)."""
    await session.execute(
        lines.insert(),
        [
            {
                "clearing_date": clearing_date,
                "transaction_id": transaction_id,
                "account_id": a,
                "side": s,
                "amount": m,
            }
            for a, s, m in rows
        ],
    )


async def transaction_lines(
    session: AsyncSession, transaction: TransactionRow
) -> list[tuple[AccountRef, Side, int]]:
    rows = await session.execute(
        select(accounts.c.kind, accounts.c.owner_ref, lines.c.side, lines.c.amount)
        .select_from(lines.join(accounts, accounts.c.id == lines.c.account_id))
        .where(
            lines.c.clearing_date == transaction.clearing_date,
            lines.c.transaction_id == transaction.id,
        )
        .order_by(lines.c.id)
    )
    return [(AccountRef(AccountKind(k), o), Side(s), int(a)) for k, o, s, a in rows]


@dataclass(frozen=True, slots=True)
class StatementRow:
    line_id: int
    side: Side
    amount: int
    transaction_id: int
    tx_type: str
    posted_at: datetime
    clearing_date: date
    description: str
    record_ref: str | None


async def account_lines(
    session: AsyncSession,
    account_id: int,
    *,
    start: datetime | None,
    end: datetime | None,
    after_line_id: int,
    limit: int,
) -> list[StatementRow]:
    """The account's lines posted in [start, end), after ``after_line_id``, oldest first."""
    stmt = (
        select(
            lines.c.id,
            lines.c.side,
            lines.c.amount,
            transactions.c.id,
            transactions.c.tx_type,
            transactions.c.posted_at,
            transactions.c.clearing_date,
            transactions.c.description,
            transactions.c.record_ref,
        )
        .select_from(lines.join(transactions, transactions.c.id == lines.c.transaction_id))
        .where(lines.c.account_id == account_id, lines.c.id > after_line_id)
        .order_by(lines.c.id)
        .limit(limit)
    )
    if start is not None:
        stmt = stmt.where(LedgerTransaction.posted_at >= start)
    if end is not None:
        stmt = stmt.where(LedgerTransaction.posted_at < end)
    rows = await session.execute(stmt)
    return [
        StatementRow(int(r[0]), Side(r[1]), int(r[2]), int(r[3]), r[4], r[5], r[6], r[7], r[8])
        for r in rows
    ]


async def balance_before_line(
    session: AsyncSession, account_id: int, normal_side: Side, line_id: int
) -> int:
    """The account's balance (normal sense) from its lines before ``line_id``."""
    signed = case((lines.c.side == normal_side.value, lines.c.amount), else_=-lines.c.amount)
    value = await session.scalar(
        select(func.coalesce(func.sum(signed), 0)).where(
            lines.c.account_id == account_id, lines.c.id < line_id
        )
    )
    return int(value or 0)


# --- holds ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HoldRow:
    id: int
    idempotency_key: str
    content_hash: str
    account_id: int
    counterparty_id: int
    amount: int
    clearing_date: date
    status: HoldStatus
    expires_at: datetime
    created_at: datetime
    resolved_at: datetime | None
    posted_amount: int | None
    transaction_id: int | None


_HOLD_COLUMNS = (
    holds.c.id,
    holds.c.idempotency_key,
    holds.c.content_hash,
    holds.c.account_id,
    holds.c.counterparty_id,
    holds.c.amount,
    holds.c.clearing_date,
    holds.c.status,
    holds.c.expires_at,
    holds.c.created_at,
    holds.c.resolved_at,
    holds.c.posted_amount,
    holds.c.transaction_id,
)


def _hold_row(row: Any) -> HoldRow:
    values = list(row)
    values[7] = HoldStatus(values[7])
    return HoldRow(*values)


_HOLD_BY_ID = Query(
    lambda _dialect: select(*_HOLD_COLUMNS).where(holds.c.id == bindparam("hold_id"))
)
_HOLD_BY_KEY = Query(
    lambda _dialect: select(*_HOLD_COLUMNS).where(holds.c.idempotency_key == bindparam("key"))
)
_HOLD_INSERTED = (
    "idempotency_key", "content_hash", "account_id", "counterparty_id", "amount", "clearing_date",
    "status", "expires_at", "created_at",
)  # fmt: skip
_INSERT_HOLD = Query(
    lambda dialect: (
        dialect_insert(dialect, holds)
        .values({name: bindparam(name, type_=holds.c[name].type) for name in _HOLD_INSERTED})
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(holds.c.id)
    )
)


async def hold_by_id(session: AsyncSession, hold_id: int) -> HoldRow | None:
    row = await _HOLD_BY_ID.first(session, {"hold_id": hold_id})
    return None if row is None else _hold_row(row)


_held_account = accounts.alias("held_account")
_counterparty = accounts.alias("counterparty")
_HOLD_WITH_REFS = Query(
    lambda _dialect: (
        select(
            *_HOLD_COLUMNS,
            _held_account.c.kind,
            _held_account.c.owner_ref,
            _counterparty.c.kind,
            _counterparty.c.owner_ref,
        )
        .join(_held_account, _held_account.c.id == holds.c.account_id)
        .join(_counterparty, _counterparty.c.id == holds.c.counterparty_id)
        .where(holds.c.id == bindparam("hold_id"))
    )
)


async def hold_with_refs(
    session: AsyncSession, hold_id: int
) -> tuple[HoldRow, AccountRef, AccountRef] | None:
    """The hold with its account and counterparty, in one round trip."""
    row = await _HOLD_WITH_REFS.first(session, {"hold_id": hold_id})
    if row is None:
        return None
    n = len(_HOLD_COLUMNS)
    return (
        _hold_row(row[:n]),
        AccountRef(AccountKind(row[n]), row[n + 1]),
        AccountRef(AccountKind(row[n + 2]), row[n + 3]),
    )


async def hold_by_key(session: AsyncSession, key: str) -> HoldRow | None:
    row = await _HOLD_BY_KEY.first(session, {"key": key})
    return None if row is None else _hold_row(row)


async def insert_hold(session: AsyncSession, values: dict[str, Any]) -> int | None:
    value = await _INSERT_HOLD.scalar(session, values)
    return None if value is None else int(value)


# The hold and its reservation on the held account: the hold's key decides a race (ON CONFLICT DO
# NOTHING: then nothing else is written either).
_PLACE_HOLD_PG = Query(
    lambda _dialect: text(
        "WITH h AS ("
        " INSERT INTO ledger_holds (idempotency_key, content_hash, account_id, counterparty_id,"
        " amount, clearing_date, status, expires_at, created_at)"
        " VALUES (:idempotency_key, :content_hash, :account_id, :counterparty_id, :amount,"
        " :clearing_date, 'pending', :expires_at, :created_at)"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
        "), reserved AS ("
        " UPDATE ledger_accounts SET held = held + :amount"
        " WHERE id = :account_id AND EXISTS (SELECT 1 FROM h)"
        ") SELECT id FROM h"
    ).bindparams(
        bindparam("amount", type_=holds.c.amount.type),
        bindparam("account_id", type_=holds.c.account_id.type),
        bindparam("counterparty_id", type_=holds.c.counterparty_id.type),
        bindparam("clearing_date", type_=holds.c.clearing_date.type),
        bindparam("expires_at", type_=holds.c.expires_at.type),
        bindparam("created_at", type_=holds.c.created_at.type),
    )
)


async def place_hold(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """Insert a pending hold and add its amount to the held account's ``held`` (callers hold the
    account's row lock); None, with nothing written, when the hold's key was taken. One
    statement on PostgreSQL; SQLite runs the two steps one after the other."""
    if not is_postgres(session):
        hold_id = await insert_hold(session, {**values, "status": HoldStatus.pending})
        if hold_id is not None:
            await apply_deltas(session, [(values["account_id"], 0, values["amount"])])
        return hold_id
    value = await _PLACE_HOLD_PG.scalar(session, values)
    return None if value is None else int(value)


_RESOLVE_HOLDS_PG = Query(
    lambda _dialect: text(
        "UPDATE ledger_holds SET status = :status, resolved_at = :now,"
        " posted_amount = :posted_amount, transaction_id = :transaction_id, reason = :reason"
        " WHERE id = ANY(CAST(:ids AS BIGINT[])) AND status = 'pending'"
    )
)


async def resolve_holds(
    session: AsyncSession,
    hold_ids: Sequence[int],
    status: HoldStatus,
    now: datetime,
    *,
    posted_amount: int | None = None,
    transaction_id: int | None = None,
    reason: str | None = None,
) -> None:
    if is_postgres(session):
        params = {
            "ids": list(hold_ids),
            "status": status.value,
            "now": now,
            "posted_amount": posted_amount,
            "transaction_id": transaction_id,
            "reason": reason,
        }
        await _RESOLVE_HOLDS_PG.rows(session, params)
        return
    await session.execute(
        update(LedgerHold)
        .where(LedgerHold.id.in_(hold_ids), LedgerHold.status == HoldStatus.pending)
        .values(
            status=status,
            resolved_at=now,
            posted_amount=posted_amount,
            transaction_id=transaction_id,
            reason=reason,
        )
        .execution_options(synchronize_session=False)
    )


async def expired_pending_holds(session: AsyncSession, now: datetime) -> list[HoldRow]:
    rows = await session.execute(
        select(*_HOLD_COLUMNS)
        .where(LedgerHold.status == HoldStatus.pending, LedgerHold.expires_at <= now)
        .order_by(holds.c.id)
    )
    return [_hold_row(r) for r in rows]


async def holds_by_ids(session: AsyncSession, hold_ids: Sequence[int]) -> list[HoldRow]:
    rows = await session.execute(select(*_HOLD_COLUMNS).where(holds.c.id.in_(hold_ids)))
    return [_hold_row(r) for r in rows]


# --- invariants (reference/settlement_hsm.md §2.3) --------------------------------------------


async def counts(session: AsyncSession) -> tuple[int, int, int, int]:
    row = (
        await session.execute(
            select(
                select(func.count()).select_from(accounts).scalar_subquery(),
                select(func.count()).select_from(transactions).scalar_subquery(),
                select(func.count()).select_from(lines).scalar_subquery(),
                select(func.count())
                .select_from(holds)
                .where(holds.c.status == HoldStatus.pending.value)
                .scalar_subquery(),
            )
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


async def unbalanced_transactions(
    session: AsyncSession,
) -> list[tuple[int, int, int, int, int, int]]:
    """(id, amount, line_count, Σ debits, Σ credits, lines) of transactions that do not balance."""
    debits = func.coalesce(
        func.sum(case((lines.c.side == Side.debit.value, lines.c.amount), else_=0)), 0
    )
    credits = func.coalesce(
        func.sum(case((lines.c.side == Side.credit.value, lines.c.amount), else_=0)), 0
    )
    n = func.count(lines.c.id)
    rows = await session.execute(
        select(
            transactions.c.id, transactions.c.amount, transactions.c.line_count, debits, credits, n
        )
        .select_from(
            transactions.outerjoin(
                lines,
                (lines.c.clearing_date == transactions.c.clearing_date)
                & (lines.c.transaction_id == transactions.c.id),
            )
        )
        .group_by(transactions.c.id, transactions.c.amount, transactions.c.line_count)
        .having(
            (debits != credits)
            | (debits != transactions.c.amount)
            | (n != transactions.c.line_count)
            | (n < 2)
        )
        .order_by(transactions.c.id)
    )
    return [tuple(int(v) for v in r) for r in rows]  # type: ignore[misc]


async def keys_without_transaction(session: AsyncSession) -> list[tuple[str, int, date]]:
    """(key, transaction id, clearing date) of keys whose transaction is not on their day."""
    joined = keys.outerjoin(
        transactions,
        (transactions.c.clearing_date == keys.c.clearing_date)
        & (transactions.c.id == keys.c.transaction_id),
    )
    rows = await session.execute(
        select(keys.c.idempotency_key, keys.c.transaction_id, keys.c.clearing_date)
        .select_from(joined)
        .where(transactions.c.id.is_(None))
        .order_by(keys.c.transaction_id)
    )
    return [(str(k), int(t), d) for k, t, d in rows]


async def signed_total(session: AsyncSession) -> int:
    """Σ of all balances, debit-positive: zero in a sound double-entry ledger."""
    signed = case(
        (accounts.c.normal_side == Side.debit.value, accounts.c.balance), else_=-accounts.c.balance
    )
    return int(await session.scalar(select(func.coalesce(func.sum(signed), 0))) or 0)


async def journal_totals(session: AsyncSession) -> tuple[int, int]:
    row = (
        await session.execute(
            select(
                func.coalesce(
                    func.sum(case((lines.c.side == Side.debit.value, lines.c.amount), else_=0)), 0
                ),
                func.coalesce(
                    func.sum(case((lines.c.side == Side.credit.value, lines.c.amount), else_=0)), 0
                ),
            )
        )
    ).one()
    return int(row[0]), int(row[1])


async def balances_differing_from_lines(session: AsyncSession) -> list[tuple[AccountRef, int, int]]:
    """(account, stored balance, balance from its lines) where they differ."""
    from_lines = (
        select(
            lines.c.account_id.label("account_id"),
            func.sum(
                case((lines.c.side == Side.debit.value, lines.c.amount), else_=-lines.c.amount)
            ).label("debit_net"),
        )
        .group_by(lines.c.account_id)
        .subquery()
    )
    debit_net = func.coalesce(from_lines.c.debit_net, 0)
    expected = case((accounts.c.normal_side == Side.debit.value, debit_net), else_=-debit_net)
    rows = await session.execute(
        select(accounts.c.kind, accounts.c.owner_ref, accounts.c.balance, expected)
        .select_from(accounts.outerjoin(from_lines, from_lines.c.account_id == accounts.c.id))
        .where(accounts.c.balance != expected)
        .order_by(accounts.c.id)
    )
    return [(AccountRef(AccountKind(k), o), int(b), int(e)) for k, o, b, e in rows]


async def forbidden_negatives(session: AsyncSession) -> list[tuple[AccountRef, int, int]]:
    """(account, balance, held) of non-overdraft accounts below zero or below their holds."""
    rows = await session.execute(
        select(accounts.c.kind, accounts.c.owner_ref, accounts.c.balance, accounts.c.held)
        .where(
            (accounts.c.held < 0)
            | (
                (accounts.c.may_go_negative == literal(False))
                & (accounts.c.balance < accounts.c.held)
            )
        )
        .order_by(accounts.c.id)
    )
    return [(AccountRef(AccountKind(k), o), int(b), int(h)) for k, o, b, h in rows]


async def held_differing_from_holds(session: AsyncSession) -> list[tuple[AccountRef, int, int]]:
    pending = (
        select(holds.c.account_id.label("account_id"), func.sum(holds.c.amount).label("total"))
        .where(holds.c.status == HoldStatus.pending.value)
        .group_by(holds.c.account_id)
        .subquery()
    )
    expected = func.coalesce(pending.c.total, 0)
    rows = await session.execute(
        select(accounts.c.kind, accounts.c.owner_ref, accounts.c.held, expected)
        .select_from(accounts.outerjoin(pending, pending.c.account_id == accounts.c.id))
        .where(accounts.c.held != expected)
        .order_by(accounts.c.id)
    )
    return [(AccountRef(AccountKind(k), o), int(h), int(e)) for k, o, h, e in rows]
