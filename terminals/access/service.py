"""Terminal sign-in (DESIGN §9): the terminal proves its TMK; the HSM issues a session MAC key.

The host never sees a terminal key: the HSM derives the TMK from the terminal master (MTMK) and
returns the new session key twice, under the TMK for the terminal and as an opaque blob (under
the HSM's LMK) that the host stores and passes back to MAC_VERIFY.
"""

from __future__ import annotations

import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.blacklist import service as blacklist
from cardsvc.errors import DependencyUnavailable, DomainError, ValidationFailed
from cardsvc.hsm import HsmClient, HsmError, HsmUnavailable, KeyRef
from cardsvc.pgdirect import Guard
from cardsvc.settings import Settings
from terminals.access import repository
from terminals.access.canonical import canonical_request
from terminals.access.context import TerminalContext
from terminals.access.errors import (
    MacInvalid,
    PsamMismatch,
    ReplayRefused,
    SessionExpired,
    SignInTimeRefused,
    TerminalUnknown,
)
from terminals.access.models import TerminalSession
from terminals.access.repository import SessionRow
from terminals.access.schemas import ListVersions, SignInRequest, SignInResponse
from terminals.lists import service as lists
from terminals.registry import service as registry
from terminals.registry.models import (
    Merchant,
    MerchantStatus,
    Terminal,
    TerminalKind,
    TerminalStatus,
)

_TERMINAL_NO = re.compile(r"^\d{12}$")


def local_datetime14(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).strftime("%Y%m%d%H%M%S")


def parse_mac(value: str | None) -> bytes:
    if value is None or len(value) != 16:
        raise MacInvalid("X-Mac must be 8 bytes in hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise MacInvalid("X-Mac must be 8 bytes in hex") from None


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A signed request whose MAC the HSM verified, before its sequence number is taken
    (:func:`claim`). ``psam_no`` is as read before the HSM was asked: :func:`claim` reads the
    session, terminal and merchant again, and only what it returns is authoritative."""

    terminal_no: str
    session_id: str
    seq: int
    terminal_id: int
    psam_no: str
    # The session's PIN key blob and the terminal's kind, as read when the session was first
    # seen (a route that checks a PIN before taking the number needs them; ``claim`` rereads).
    pin_key_blob: bytes | None = None
    kind: TerminalKind | None = None


@dataclass(frozen=True, slots=True)
class _SessionKeys:
    key_blob: bytes
    terminal_id: int
    terminal_no: str
    psam_no: str
    pin_key_blob: bytes | None
    kind: TerminalKind


# Session id → its keys and terminal: a session's keys never change, so they are read once per
# process, in a short session of its own; whether the session is still live is decided by
# ``claim`` (take_seq returns the row as it is).
_SESSION_KEYS: OrderedDict[str, _SessionKeys] = OrderedDict()
SESSION_KEY_CACHE_SIZE: Final = 50_000


async def _session_key(
    reads: async_sessionmaker[AsyncSession], session_id: str
) -> _SessionKeys | None:
    found = _SESSION_KEYS.get(session_id)
    if found is not None:
        _SESSION_KEYS.move_to_end(session_id)
        return found
    async with reads() as reading:
        row = await repository.session_with_terminal(reading, session_id)
    if row is None:
        return None
    found = _SessionKeys(
        row.key_blob, row.terminal_id, row.terminal_no, row.psam_no, row.pin_key_blob,
        row.terminal_kind,
    )  # fmt: skip
    _SESSION_KEYS[session_id] = found
    if len(_SESSION_KEYS) > SESSION_KEY_CACHE_SIZE:
        _SESSION_KEYS.popitem(last=False)
    return found


async def verify_signed(
    reads: async_sessionmaker[AsyncSession],
    hsm: HsmClient,
    *,
    terminal_no: str,
    session_id: str,
    seq: int,
    mac: bytes,
    canonical: bytes,
) -> SignedRequest:
    """The HSM verifies the request's MAC under its session key; no connection is held meanwhile
    (docs/architecture.md §11)."""
    found = await _session_key(reads, session_id)
    if found is None or found.terminal_no != terminal_no:
        raise SessionExpired("unknown session: sign in")
    await verify_mac(hsm, KeyRef.session(found.key_blob), canonical, mac)
    return SignedRequest(
        terminal_no, session_id, seq, found.terminal_id, found.psam_no, found.pin_key_blob,
        found.kind,
    )  # fmt: skip


def _refusal(row: SessionRow | None, terminal_no: str) -> DomainError | None:
    if row is None or row.terminal_no != terminal_no:
        return SessionExpired("unknown session: sign in")
    if row.terminal_status is not TerminalStatus.active or not row.merchant_active:
        return TerminalUnknown("terminal or merchant not active")
    if row.revoked or row.expires_at <= clock.now():
        return SessionExpired("session expired: sign in")
    return None


async def claim(session: AsyncSession, signed: SignedRequest) -> TerminalContext:
    """Take the request's sequence number in ``session`` (the write transaction opens here; the
    session row stays locked until it commits, so a terminal's requests are serialized and of two
    racing copies exactly one passes) and return the terminal as it is now."""
    row = await repository.take_seq(session, signed.session_id, signed.seq)
    if row is None:
        # Not taken: say why, in the order of the checks below (a replay comes last).
        raise _refusal(
            await repository.session_with_terminal(session, signed.session_id), signed.terminal_no
        ) or ReplayRefused("sequence number already used")
    refusal = _refusal(row, signed.terminal_no)
    if refusal is not None:
        raise refusal
    return TerminalContext(
        terminal_id=row.terminal_id,
        terminal_no=row.terminal_no,
        psam_no=row.psam_no,
        kind=row.terminal_kind,
        merchant_id=row.merchant_id,
        merchant_no=row.merchant_no,
        merchant_category=row.merchant_category,
        session_id=signed.session_id,
        seq=signed.seq,
        pin_key_blob=row.pin_key_blob,
    )


async def mark_pin_seq(session: AsyncSession, signed: SignedRequest) -> bool:
    """Record that a PIN is checked for this request's sequence number, before the number is
    taken; False when it was taken already or a PIN was checked for it: a copy of a request (a
    replay in flight) then checks no PIN and takes no try."""
    return await repository.mark_pin_seq(session, signed.session_id, signed.seq)


def pin_seq_mark(signed: SignedRequest) -> Guard:
    """:func:`mark_pin_seq` as a guard of the statement that takes the PIN try, so that the mark
    and the try are one statement (``cardsvc.pgdirect.Guard``)."""
    return repository.pin_seq_mark(signed.session_id, signed.seq)


async def verify_mac(hsm: HsmClient, key: KeyRef, data: bytes, mac: bytes) -> None:
    try:
        valid = await hsm.mac_verify(key, data, mac)
    except HsmUnavailable as exc:
        raise DependencyUnavailable("HSM unavailable") from exc
    except HsmError as exc:
        raise MacInvalid(f"MAC not verifiable: {exc.code}") from exc
    if not valid:
        raise MacInvalid("MAC does not verify")


@dataclass(frozen=True, slots=True)
class SigningTerminal:
    """A terminal whose sign-in MAC verified (its TMK made it), read before the HSM was asked."""

    terminal: Terminal
    merchant: Merchant


async def verify_sign_in(
    reads: async_sessionmaker[AsyncSession],
    hsm: HsmClient,
    *,
    path: str,
    terminal_no: str,
    mac_hex: str | None,
    body: bytes,
) -> SigningTerminal:
    """The first two steps of a sign-in, before its body is parsed: read the terminal (a short
    session of its own, closed before the HSM works), then let the HSM verify the TMK's MAC over
    the raw bytes. :func:`open_session` writes."""
    if not _TERMINAL_NO.match(terminal_no):
        raise TerminalUnknown("X-Terminal-No must be 12 digits")
    mac = parse_mac(mac_hex)
    async with reads() as reading:
        found = await registry.terminal_with_merchant(reading, terminal_no)
    if found is None:
        raise TerminalUnknown("unknown terminal")
    terminal, merchant = found
    if terminal.status is not TerminalStatus.active or merchant.status is not MerchantStatus.active:
        raise TerminalUnknown(f"terminal is {terminal.status}, merchant is {merchant.status}")
    canonical = canonical_request("POST", path, terminal_no, "", 0, body)
    await verify_mac(hsm, KeyRef.terminal_master(bytes.fromhex(terminal_no)), canonical, mac)
    return SigningTerminal(terminal, merchant)


async def open_session(
    session: AsyncSession,
    hsm: HsmClient,
    settings: Settings,
    signer: SigningTerminal,
    request: SignInRequest,
) -> SignInResponse:
    """The verified sign-in's checks, the HSM's new session key, then the writes."""
    terminal, merchant = signer.terminal, signer.merchant
    if request.terminal_no != terminal.terminal_no:
        raise ValidationFailed("X-Terminal-No and the body's terminal_no differ")
    if request.psam_no != terminal.psam_no:
        raise PsamMismatch("the PSAM is not the one registered for this terminal")
    terminal_bcd = bytes.fromhex(terminal.terminal_no)
    now = clock.now()
    window = timedelta(seconds=settings.terminal_sign_in_window_seconds)
    _check_terminal_time(request.terminal_time, now, window, settings)
    try:
        opened = await hsm.terminal_session_open(terminal_bcd)
    except HsmUnavailable as exc:
        raise DependencyUnavailable("HSM unavailable") from exc
    # A signed request within the window with a fresh nonce: a recorded one is refused by its
    # nonce while it is young enough to pass the time check, and by its time after.
    if not await repository.claim_nonce(session, terminal.id, request.nonce, now, now - 2 * window):
        raise ReplayRefused("sign-in nonce already used")
    # One live session per terminal: a new sign-in ends the earlier ones.
    await repository.revoke_sessions(session, terminal.id)
    row = TerminalSession(
        id=secrets.token_hex(16),
        terminal_id=terminal.id,
        key_blob=opened.key_under_lmk,
        key_kcv=opened.kcv.hex().upper(),
        pin_key_blob=opened.pin_key_under_lmk,
        last_seq=0,
        pin_seq=0,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.terminal_session_ttl_seconds),
        revoked=False,
    )
    await repository.add_session(session, row)
    await registry.record_sign_in(session, terminal.id, now)
    await registry.record_versions(
        session, terminal.id, request.blacklist_version, request.params_version, now
    )
    return SignInResponse(
        session_id=row.id,
        session_key=opened.key_under_tmk.hex().upper(),
        key_kcv=opened.kcv.hex().upper(),
        pin_key=opened.pin_key_under_tmk.hex().upper(),
        pin_kcv=opened.pin_kcv.hex().upper(),
        no_pin_limit=settings.online_no_pin_limits.get(merchant.category.value, 0),
        seq=0,
        server_time=local_datetime14(now, settings.zone),
        expires_at=row.expires_at,
        merchant_no=merchant.merchant_no,
        merchant_category=merchant.category.value,
        lists=ListVersions(
            blacklist=await blacklist.current_version(session),
            parameters=await lists.parameters_version(session),
        ),
    )


def _check_terminal_time(
    terminal_time: str, now: datetime, window: timedelta, settings: Settings
) -> None:
    try:
        moment = datetime.strptime(terminal_time, "%Y%m%d%H%M%S").replace(tzinfo=settings.zone)
    except ValueError:
        raise ValidationFailed("terminal_time is not a calendar time YYYYMMDDhhmmss") from None
    if abs(moment - now) > window:
        raise SignInTimeRefused(
            f"terminal_time is more than {int(window.total_seconds())} s from the host's time "
            f"{local_datetime14(now, settings.zone)}: set the clock and sign in again"
        )


async def set_terminal_status(
    session: AsyncSession, terminal_no: str, status: TerminalStatus, *, actor: str
) -> Terminal:
    """Activate, suspend or retire a terminal; one that stops being active loses its sessions at
    once, so a terminal brought back must sign in again."""
    terminal = await registry.set_terminal_status(session, terminal_no, status, actor=actor)
    if status is not TerminalStatus.active:
        await repository.revoke_sessions(session, terminal.id)
    return terminal
