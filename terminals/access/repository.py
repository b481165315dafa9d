"""SQL of terminal sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.sql import PerDialect
from terminals.access.models import TerminalSession
from terminals.registry.models import Merchant, Terminal, TerminalStatus


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: str
    key_blob: bytes
    last_seq: int
    expires_at: datetime
    revoked: bool
    terminal_id: int
    terminal_no: str
    psam_no: str
    terminal_status: TerminalStatus
    merchant_id: int
    merchant_no: str
    merchant_category: str
    merchant_active: bool


async def add_session(session: AsyncSession, row: TerminalSession) -> None:
    session.add(row)
    await session.flush()


_ROW_COLUMNS = (
    TerminalSession.id,
    TerminalSession.key_blob,
    TerminalSession.last_seq,
    TerminalSession.expires_at,
    TerminalSession.revoked,
    Terminal.id,
    Terminal.terminal_no,
    Terminal.psam_no,
    Terminal.status,
    Merchant.id,
    Merchant.merchant_no,
    Merchant.category,
    Merchant.status,
)


def _session_row(row: Any) -> SessionRow:
    return SessionRow(
        session_id=row[0],
        key_blob=row[1],
        last_seq=row[2],
        expires_at=row[3],
        revoked=row[4],
        terminal_id=row[5],
        terminal_no=row[6],
        psam_no=row[7],
        terminal_status=TerminalStatus(row[8]),
        merchant_id=row[9],
        merchant_no=row[10],
        merchant_category=str(row[11]),
        merchant_active=str(row[12]) == "active",
    )


async def session_with_terminal(session: AsyncSession, session_id: str) -> SessionRow | None:
    """The session, its terminal and merchant in one round trip."""
    stmt = (
        select(*_ROW_COLUMNS)
        .join(Terminal, Terminal.id == TerminalSession.terminal_id)
        .join(Merchant, Merchant.id == Terminal.merchant_id)
        .where(TerminalSession.id == session_id)
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else _session_row(row)


def _build_take_seq(_dialect: str) -> Any:
    sessions: Table = TerminalSession.__table__  # type: ignore[assignment]
    seq = bindparam("seq", type_=BigInteger)
    return (
        update(sessions)
        .where(
            TerminalSession.id == bindparam("session_id"),
            TerminalSession.last_seq < seq,
            Terminal.id == TerminalSession.terminal_id,
            Merchant.id == Terminal.merchant_id,
        )
        .values(last_seq=seq)
        .returning(*_ROW_COLUMNS)
    )


_take_seq = PerDialect(_build_take_seq)


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
    params = {"session_id": session_id, "seq": seq}
    row = (await session.execute(_take_seq(session), params)).one_or_none()
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


async def revoke_sessions(session: AsyncSession, terminal_id: int) -> int:
    result = await session.execute(
        update(TerminalSession)
        .where(TerminalSession.terminal_id == terminal_id, TerminalSession.revoked.is_(False))
        .values(revoked=True)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def delete_expired(session: AsyncSession, now: datetime) -> int:
    from sqlalchemy import delete

    result = await session.execute(delete(TerminalSession).where(TerminalSession.expires_at < now))
    return int(getattr(result, "rowcount", 0) or 0)
