"""SQL of terminal sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Table, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.pgdirect import Guard, Query
from cardsvc.sql import insert_ignore_stmt
from terminals.access.models import SignInNonce, TerminalSession
from terminals.registry.models import (
    Merchant,
    MerchantStatus,
    Terminal,
    TerminalKind,
    TerminalStatus,
)


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: str
    key_blob: bytes
    pin_key_blob: bytes | None
    last_seq: int
    expires_at: datetime
    revoked: bool
    terminal_id: int
    terminal_no: str
    psam_no: str
    terminal_kind: TerminalKind
    terminal_status: TerminalStatus
    merchant_id: int
    merchant_no: str
    merchant_category: str
    merchant_active: bool


async def claim_nonce(
    session: AsyncSession, terminal_id: int, nonce: str, now: datetime, keep_since: datetime
) -> bool:
    """Record a sign-in nonce; False when the terminal used it before. Forgets the terminal's
    nonces older than ``keep_since`` (a sign-in that old is refused by its time)."""
    await session.execute(
        delete(SignInNonce).where(
            SignInNonce.terminal_id == terminal_id, SignInNonce.used_at < keep_since
        )
    )
    result = await session.execute(
        insert_ignore_stmt(session, SignInNonce.__table__).values(
            terminal_id=terminal_id, nonce=nonce, used_at=now
        )
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


async def add_session(session: AsyncSession, row: TerminalSession) -> None:
    session.add(row)
    await session.flush()


# Core columns (not ORM attributes): the authentication of every request runs these statements,
# and plain Core skips the ORM's statement handling.
_sessions: Table = TerminalSession.__table__  # type: ignore[assignment]
_terminals: Table = Terminal.__table__  # type: ignore[assignment]
_merchants: Table = Merchant.__table__  # type: ignore[assignment]
_ROW_COLUMNS = (
    _sessions.c.id,
    _sessions.c.key_blob,
    _sessions.c.pin_key_blob,
    _sessions.c.last_seq,
    _sessions.c.expires_at,
    _sessions.c.revoked,
    _terminals.c.id,
    _terminals.c.terminal_no,
    _terminals.c.psam_no,
    _terminals.c.kind,
    _terminals.c.status,
    _merchants.c.id,
    _merchants.c.merchant_no,
    _merchants.c.category,
    _merchants.c.status,
)


def _session_row(row: Any) -> SessionRow:
    return SessionRow(
        session_id=row[0],
        key_blob=row[1],
        pin_key_blob=row[2],
        last_seq=row[3],
        expires_at=row[4],
        revoked=row[5],
        terminal_id=row[6],
        terminal_no=row[7],
        psam_no=row[8],
        terminal_kind=TerminalKind(row[9]),
        terminal_status=TerminalStatus(row[10]),
        merchant_id=row[11],
        merchant_no=row[12],
        merchant_category=str(row[13]),
        merchant_active=str(row[14]) == "active",
    )


async def session_with_terminal(session: AsyncSession, session_id: str) -> SessionRow | None:
    """The session, its terminal and merchant in one round trip."""
    stmt = (
        select(*_ROW_COLUMNS)
        .join(_terminals, _terminals.c.id == _sessions.c.terminal_id)
        .join(_merchants, _merchants.c.id == _terminals.c.merchant_id)
        .where(_sessions.c.id == session_id)
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else _session_row(row)


def _build_take_seq(_dialect: str) -> Any:
    seq = bindparam("seq", type_=BigInteger)
    return (
        update(_sessions)
        .where(
            _sessions.c.id == bindparam("session_id"),
            _sessions.c.last_seq < seq,
            _terminals.c.id == _sessions.c.terminal_id,
            _merchants.c.id == _terminals.c.merchant_id,
        )
        .values(last_seq=seq)
        .returning(*_ROW_COLUMNS)
    )


_TAKE_SEQ = Query(_build_take_seq)  # PostgreSQL only (see take_seq)


async def take_seq(session: AsyncSession, session_id: str, seq: int) -> SessionRow | None:
    """Move the session's sequence number to ``seq`` if it is higher, and return the session with
    its terminal and merchant; None when the session is unknown or ``seq`` is not higher.

    One statement on PostgreSQL: the update row-locks the session until the request's transaction
    ends, so of two racing copies of a request exactly one passes, and a terminal's requests are
    serialized. The returned ``last_seq`` is the new one.
    """
    if session.get_bind().dialect.name != "postgresql":
        # SQLite's RETURNING may not name the tables of UPDATE ... FROM: take, then read.
        if not await advance_seq(session, session_id, seq):
            return None
        return await session_with_terminal(session, session_id)
    row = await _TAKE_SEQ.first(session, {"session_id": session_id, "seq": seq})
    return None if row is None else _session_row(row)


async def advance_seq(session: AsyncSession, session_id: str, seq: int) -> bool:
    """Atomic: only a strictly greater sequence number moves the session on (DESIGN §9)."""
    result = await session.execute(
        update(TerminalSession)
        .where(TerminalSession.id == session_id, TerminalSession.last_seq < seq)
        .values(last_seq=seq)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


_GUARD_PIN_SEQ = Query(
    lambda _dialect: (
        update(_sessions)
        .where(
            _sessions.c.id == bindparam("b_session_id"),
            _sessions.c.last_seq < bindparam("b_seq", type_=BigInteger),
            _sessions.c.pin_seq < bindparam("b_seq", type_=BigInteger),
        )
        .values(pin_seq=bindparam("b_seq", type_=BigInteger))
        .returning(_sessions.c.id)
    )
)


def pin_seq_mark(session_id: str, seq: int) -> Guard:
    """The guarded UPDATE of :func:`mark_pin_seq`, for a statement that goes on only if it
    marked the number (``cardsvc.pgdirect.Guard``)."""
    return Guard(_GUARD_PIN_SEQ, {"b_session_id": session_id, "b_seq": seq})


async def mark_pin_seq(session: AsyncSession, session_id: str, seq: int) -> bool:
    """Record that a PIN is checked for sequence number ``seq`` of the session; False when the
    number is taken already or a PIN was checked for it (or a later one) before: a copy of a
    request then checks no PIN. One guarded UPDATE, so of two racing copies one passes."""
    return (
        await _GUARD_PIN_SEQ.first(session, {"b_session_id": session_id, "b_seq": seq}) is not None
    )


async def live_pin_key(
    session: AsyncSession, terminal_no: str, kind: TerminalKind, now: datetime
) -> bytes | None:
    """The PIN key blob of the live session of an active terminal of ``kind``, or None."""
    stmt = (
        select(_sessions.c.pin_key_blob)
        .join(_terminals, _terminals.c.id == _sessions.c.terminal_id)
        .join(_merchants, _merchants.c.id == _terminals.c.merchant_id)
        .where(
            _terminals.c.terminal_no == terminal_no,
            _terminals.c.kind == kind,
            _terminals.c.status == TerminalStatus.active,
            _merchants.c.status == MerchantStatus.active,
            _sessions.c.revoked.is_(False),
            _sessions.c.expires_at > now,
            _sessions.c.pin_key_blob.is_not(None),
        )
        .order_by(_sessions.c.created_at.desc())
        .limit(1)
    )
    value = (await session.execute(stmt)).scalar()
    return None if value is None else bytes(value)


async def revoke_sessions(session: AsyncSession, terminal_id: int) -> int:
    result = await session.execute(
        update(TerminalSession)
        .where(TerminalSession.terminal_id == terminal_id, TerminalSession.revoked.is_(False))
        .values(revoked=True)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def delete_expired(session: AsyncSession, now: datetime) -> int:
    result = await session.execute(delete(TerminalSession).where(TerminalSession.expires_at < now))
    return int(getattr(result, "rowcount", 0) or 0)
