"""Authentication of every signed terminal request (DESIGN §9; docs/terminal-protocol.md §3).

A signed request carries ``X-Terminal-No``, ``X-Session-Id``, ``X-Seq`` and ``X-Mac`` (hex of
the 8-byte retail MAC by the session key over :func:`canonical_request`). In the request's own
transaction, one statement moves the session's sequence number to ``X-Seq`` if it is higher and
returns the session with its terminal and merchant (the row stays locked until the request
commits, so of two racing copies exactly one passes). Then: the session belongs to that terminal
and is live; the terminal and its merchant are active; the HSM verifies the MAC. Any refusal
raises, and the rollback gives the sequence number back: a forged request cannot burn the
terminal's numbers.

A request refused *after* authentication (a conflict, a validation error) still consumes its
sequence number: the dependency takes it again in a transaction of its own, so that request
cannot be replayed once the state has changed.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from cardsvc import clock
from cardsvc.deps import HsmDep, SessionDep
from cardsvc.errors import DomainError
from cardsvc.hsm import KeyRef
from terminals.access import repository
from terminals.access.canonical import canonical_request
from terminals.access.context import TerminalContext
from terminals.access.errors import MacInvalid, ReplayRefused, SessionExpired, TerminalUnknown
from terminals.access.repository import SessionRow
from terminals.access.service import parse_mac, verify_mac
from terminals.registry.models import TerminalStatus

_TERMINAL_NO = re.compile(r"^\d{12}$")
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_SEQ = 2**62


def request_target(request: Request) -> str:
    """The path and raw query exactly as the terminal sent them (the MAC covers both)."""
    path = str(request.scope["path"])
    query = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('ascii', 'replace')}" if query else path


def _refusal(row: SessionRow | None, terminal_no: str) -> DomainError | None:
    if row is None or row.terminal_no != terminal_no:
        return SessionExpired("unknown session: sign in")
    if row.terminal_status is not TerminalStatus.active or not row.merchant_active:
        return TerminalUnknown("terminal or merchant not active")
    if row.revoked or row.expires_at <= clock.now():
        return SessionExpired("session expired: sign in")
    return None


async def authenticate_terminal(
    request: Request, session: SessionDep, hsm: HsmDep
) -> AsyncIterator[TerminalContext]:
    terminal_no = request.headers.get("x-terminal-no", "")
    session_id = request.headers.get("x-session-id", "")
    seq_text = request.headers.get("x-seq", "")
    if not _TERMINAL_NO.match(terminal_no):
        raise TerminalUnknown("X-Terminal-No must be 12 digits")
    if not _SESSION_ID.match(session_id):
        raise SessionExpired("X-Session-Id missing or malformed: sign in")
    if not seq_text.isdigit() or len(seq_text) > 18 or (len(seq_text) > 1 and seq_text[0] == "0"):
        raise ReplayRefused("X-Seq must be a decimal integer without leading zeros")
    seq = int(seq_text)
    if not 1 <= seq < MAX_SEQ:
        raise ReplayRefused("X-Seq out of range")
    mac = parse_mac(request.headers.get("x-mac"))
    body = await request.body()
    canonical = canonical_request(
        request.method, request_target(request), terminal_no, session_id, seq, body
    )

    row = await repository.take_seq(session, session_id, seq)
    if row is None:
        # Not taken: say why, in the order of the checks below (a replay comes last).
        raise _refusal(
            await repository.session_with_terminal(session, session_id), terminal_no
        ) or ReplayRefused("sequence number already used")
    refusal = _refusal(row, terminal_no)
    if refusal is not None:
        raise refusal
    await verify_mac(hsm, KeyRef.session(row.key_blob), canonical, mac)
    try:
        yield TerminalContext(
            terminal_id=row.terminal_id,
            terminal_no=row.terminal_no,
            psam_no=row.psam_no,
            kind=row.terminal_kind,
            merchant_id=row.merchant_id,
            merchant_no=row.merchant_no,
            merchant_category=row.merchant_category,
            session_id=session_id,
            seq=seq,
            pin_key_blob=row.pin_key_blob,
        )
    except Exception:
        # The request failed after authentication: its transaction is undone, the number stays used.
        await session.rollback()
        await repository.advance_seq(session, session_id, seq)
        await session.commit()
        raise


authenticate_terminal.__terminal__ = True  # type: ignore[attr-defined]  # cardsvc.api.openapi

# Function scope: the dependency ends with the endpoint, before the response is sent (as the
# request's session does, which it depends on).
AuthenticatedTerminal = Annotated[TerminalContext, Depends(authenticate_terminal, scope="function")]

__all__ = ["AuthenticatedTerminal", "MacInvalid", "TerminalContext", "authenticate_terminal"]
