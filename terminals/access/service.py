"""Terminal sign-in (DESIGN §9): the terminal proves its TMK; the HSM issues a session MAC key.

The host never sees a terminal key: the HSM derives the TMK from the terminal master (MTMK) and
returns the new session key twice, under the TMK for the terminal and as an opaque blob (under
the HSM's LMK) that the host stores and passes back to MAC_VERIFY.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, tzinfo

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.blacklist import service as blacklist
from cardsvc.cache import Cache
from cardsvc.errors import DependencyUnavailable, ValidationFailed
from cardsvc.hsm import HsmClient, HsmError, HsmUnavailable, KeyRef
from cardsvc.settings import Settings
from terminals.access import repository
from terminals.access.canonical import canonical_request
from terminals.access.errors import MacInvalid, PsamMismatch, ReplayRefused, TerminalUnknown
from terminals.access.models import TerminalSession
from terminals.access.schemas import ListVersions, SignInRequest, SignInResponse
from terminals.lists import service as lists
from terminals.registry import repository as registry
from terminals.registry.models import MerchantStatus, TerminalStatus


def local_datetime14(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).strftime("%Y%m%d%H%M%S")


def parse_mac(value: str | None) -> bytes:
    if value is None or len(value) != 16:
        raise MacInvalid("X-Mac must be 8 bytes in hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise MacInvalid("X-Mac must be 8 bytes in hex") from None


async def verify_mac(hsm: HsmClient, key: KeyRef, data: bytes, mac: bytes) -> None:
    try:
        valid = await hsm.mac_verify(key, data, mac)
    except HsmUnavailable as exc:
        raise DependencyUnavailable("HSM unavailable") from exc
    except HsmError as exc:
        raise MacInvalid(f"MAC not verifiable: {exc.code}") from exc
    if not valid:
        raise MacInvalid("MAC does not verify")


async def sign_in(
    session: AsyncSession,
    hsm: HsmClient,
    cache: Cache,
    settings: Settings,
    *,
    path: str,
    header_terminal_no: str,
    mac_hex: str | None,
    body: bytes,
    request: SignInRequest,
) -> SignInResponse:
    if request.terminal_no != header_terminal_no:
        raise ValidationFailed("X-Terminal-No and the body's terminal_no differ")
    found = await registry.terminal_with_merchant(session, request.terminal_no)
    if found is None:
        raise TerminalUnknown("unknown terminal")
    terminal, merchant = found
    if terminal.status is not TerminalStatus.active or merchant.status is not MerchantStatus.active:
        raise TerminalUnknown(f"terminal is {terminal.status}, merchant is {merchant.status}")
    mac = parse_mac(mac_hex)
    terminal_bcd = bytes.fromhex(request.terminal_no)
    canonical = canonical_request("POST", path, request.terminal_no, "", 0, body)
    await verify_mac(hsm, KeyRef.terminal_master(terminal_bcd), canonical, mac)
    if request.psam_no != terminal.psam_no:
        raise PsamMismatch("the PSAM is not the one registered for this terminal")
    # The nonce makes a recorded sign-in useless to replay within the session lifetime.
    fresh = await cache.set_if_absent(
        f"terminal-sign-in:{request.terminal_no}:{request.nonce}",
        b"1",
        ttl=settings.terminal_session_ttl_seconds,
    )
    if not fresh:
        raise ReplayRefused("sign-in nonce already used")
    try:
        opened = await hsm.terminal_session_open(terminal_bcd)
    except HsmUnavailable as exc:
        raise DependencyUnavailable("HSM unavailable") from exc
    now = clock.now()
    # One live session per terminal: a new sign-in ends the earlier ones.
    await repository.revoke_sessions(session, terminal.id)
    row = TerminalSession(
        id=secrets.token_hex(16),
        terminal_id=terminal.id,
        key_blob=opened.key_under_lmk,
        key_kcv=opened.kcv.hex().upper(),
        last_seq=0,
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
