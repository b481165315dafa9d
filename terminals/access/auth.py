"""Authentication of every signed terminal request (DESIGN §9; docs/terminal-protocol.md §3).

A signed request carries ``X-Terminal-No``, ``X-Session-Id``, ``X-Seq`` and ``X-Mac`` (hex of
the 8-byte retail MAC by the session key over :func:`canonical_request`). The dependency checks,
in order: the session exists, belongs to that terminal, is live; the terminal and its merchant
are active; the sequence number is above the last one seen (cheap refusal of replays before the
HSM is asked); the HSM verifies the MAC; and only then the sequence number is advanced by one
atomic ``UPDATE ... WHERE last_seq < :seq``, so that of two racing copies exactly one passes.

The session lookup and the sequence bump run in their own short transaction, committed before
the endpoint runs: a request that later fails still consumes its sequence number, so it cannot
be replayed once the state has changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from cardsvc.db import unit_of_work, utcnow
from cardsvc.deps import CacheDep, HsmDep, SessionDep, get_resources
from hsm_sim.client import KeyRef
from terminals.access import repository
from terminals.access.canonical import canonical_request
from terminals.access.errors import MacInvalid, ReplayRefused, SessionExpired, TerminalUnknown
from terminals.access.service import parse_mac, verify_mac
from terminals.registry.models import TerminalStatus

_TERMINAL_NO = re.compile(r"^\d{12}$")
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_SEQ = 2**62


@dataclass(frozen=True)
class TerminalContext:
    terminal_id: int
    terminal_no: str  # 12 digits
    psam_no: str
    merchant_id: int
    merchant_no: str  # 15 digits
    merchant_category: str
    session_id: str
    seq: int


def request_target(request: Request) -> str:
    """The path and raw query exactly as the terminal sent them (the MAC covers both)."""
    path = str(request.scope["path"])
    query = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('ascii', 'replace')}" if query else path


async def authenticate_terminal(
    request: Request, session: SessionDep, hsm: HsmDep, cache: CacheDep
) -> TerminalContext:
    del session, cache  # the checks run in their own transaction (see the module docstring)
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

    resources = get_resources(request)
    async with unit_of_work(resources.sessions) as own:
        row = await repository.session_with_terminal(own, session_id)
        if row is None or row.terminal_no != terminal_no:
            raise SessionExpired("unknown session: sign in")
        if row.terminal_status is not TerminalStatus.active or not row.merchant_active:
            raise TerminalUnknown("terminal or merchant not active")
        if row.revoked or row.expires_at <= utcnow():
            raise SessionExpired("session expired: sign in")
        if seq <= row.last_seq:
            raise ReplayRefused("sequence number already used")
        await verify_mac(hsm, KeyRef.session(row.key_blob), canonical, mac)
        if not await repository.advance_seq(own, session_id, seq):
            raise ReplayRefused("sequence number already used")
    return TerminalContext(
        terminal_id=row.terminal_id,
        terminal_no=row.terminal_no,
        psam_no=row.psam_no,
        merchant_id=row.merchant_id,
        merchant_no=row.merchant_no,
        merchant_category=row.merchant_category,
        session_id=session_id,
        seq=seq,
    )


AuthenticatedTerminal = Annotated[TerminalContext, Depends(authenticate_terminal)]

__all__ = ["AuthenticatedTerminal", "MacInvalid", "TerminalContext", "authenticate_terminal"]
