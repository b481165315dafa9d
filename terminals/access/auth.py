"""Authentication of every signed terminal request (DESIGN §9; docs/terminal-protocol.md §3).

A signed request carries ``X-Terminal-No``, ``X-Session-Id``, ``X-Seq`` and ``X-Mac`` (hex of
the 8-byte retail MAC by the session key over :func:`canonical_request`). First the HSM verifies
the MAC over the raw bytes, with no connection or lock held (the session's key is read once per
process, in a short session of its own): a forged request never reaches a write. Then, in the
request's own transaction, one statement moves the session's sequence number to ``X-Seq`` if it
is higher and returns the session with its terminal and merchant (``service.claim``; the row
stays locked until the request commits, so of two racing copies exactly one passes): the session
belongs to that terminal and is live; the terminal and its merchant are active. A route that asks
the HSM more takes the number only after that (``VerifiedTerminal``).

A request refused *after* authentication (a conflict, a validation error) still consumes its
sequence number: the dependency takes it again in a transaction of its own, so that request
cannot be replayed once the state has changed.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.api.limits import parse_json
from cardsvc.deps import HsmDep, SessionDep, SessionsDep
from terminals.access import repository, service
from terminals.access.canonical import canonical_request
from terminals.access.context import TerminalContext
from terminals.access.errors import MacInvalid, ReplayRefused, SessionExpired, TerminalUnknown
from terminals.access.service import SignedRequest, parse_mac

_TERMINAL_NO = re.compile(r"^\d{12}$")
_SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_SEQ = 2**62
M = TypeVar("M", bound=BaseModel)


def request_target(request: Request) -> str:
    """The path and raw query exactly as the terminal sent them (the MAC covers both)."""
    path = str(request.scope["path"])
    query = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('ascii', 'replace')}" if query else path


async def signed_request(request: Request, sessions: SessionsDep, hsm: HsmDep) -> SignedRequest:
    """The headers checked and the MAC verified by the HSM over the raw bytes, before the body is
    parsed and before any write transaction opens."""
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
    return await service.verify_signed(
        sessions,
        hsm,
        terminal_no=terminal_no,
        session_id=session_id,
        seq=seq,
        mac=mac,
        canonical=canonical,
    )


Signed = Annotated[SignedRequest, Depends(signed_request)]


async def _consume(session: AsyncSession, signed: SignedRequest) -> None:
    """The request failed after authentication: its transaction is undone, but its sequence
    number stays used (a request refused once cannot be replayed after the state changed)."""
    await session.rollback()
    await repository.advance_seq(session, signed.session_id, signed.seq)
    await session.commit()


async def verify_terminal(session: SessionDep, signed: Signed) -> AsyncIterator[SignedRequest]:
    """A signed request, verified. A route that asks the HSM more (a load's MAC1, TACs) does that
    first, then takes the sequence number with ``service.claim``, which opens the write
    transaction. Whatever fails after this point consumes the number."""
    try:
        yield signed
    except Exception:
        await _consume(session, signed)
        raise


# Function scope: the dependency ends with the endpoint, before the response is sent (as the
# request's session does, which it depends on).
VerifiedTerminal = Annotated[SignedRequest, Depends(verify_terminal, scope="function")]


async def authenticate_terminal(session: SessionDep, signed: VerifiedTerminal) -> TerminalContext:
    """A signed request whose sequence number is taken at once (routes that ask the HSM nothing
    more)."""
    return await service.claim(session, signed)


def signed_body(model: type[M]) -> Any:
    """A signed request's JSON body as ``model``, parsed only after its MAC verified and its
    sequence number was taken (a replayed request is refused as a replay, whatever its body)."""

    async def parse(request: Request, _terminal: AuthenticatedTerminal) -> M:
        return await parse_json(request, model)

    parse.__json_body__ = model  # type: ignore[attr-defined]  # cardsvc.api.openapi documents it
    return Depends(parse)


def verified_body(model: type[M]) -> Any:
    """The same for a route that takes the number itself, after asking the HSM (``claim``): the
    body is parsed after the MAC verified, before the number is taken."""

    async def parse(request: Request, _signed: VerifiedTerminal) -> M:
        return await parse_json(request, model)

    parse.__json_body__ = model  # type: ignore[attr-defined]
    return Depends(parse)


authenticate_terminal.__terminal__ = True  # type: ignore[attr-defined]  # cardsvc.api.openapi
verify_terminal.__terminal__ = True  # type: ignore[attr-defined]

AuthenticatedTerminal = Annotated[TerminalContext, Depends(authenticate_terminal)]

__all__ = [
    "AuthenticatedTerminal",
    "MacInvalid",
    "SignedRequest",
    "TerminalContext",
    "VerifiedTerminal",
    "authenticate_terminal",
    "signed_body",
    "verified_body",
]
