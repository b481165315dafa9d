"""Staff authentication: roles, argon2 password hashes, HMAC-signed bearer tokens (DESIGN §12).

Tokens are ``base64url(payload JSON) . base64url(HMAC-SHA256(token_secret, payload))``; the payload
carries the staff id, username, roles, the account's session version and expiry. Every request
re-reads the staff row (:mod:`cardsvc.staff.deps`): a token whose session version is not the
row's (the account was locked, disabled or its roles changed since) is refused at once.

Password hashes are argon2; hashing and verifying run in a worker thread (each takes a couple of
hundred milliseconds of CPU, which would stall every request of the event loop), and a login for
an unknown username verifies against a dummy hash, so it costs the same as a known one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cardsvc import clock
from cardsvc.errors import Forbidden, NotAuthenticated
from cardsvc.settings import Settings


class Role(StrEnum):
    counter_operator = "counter_operator"
    supervisor = "supervisor"
    finance = "finance"
    administrator = "administrator"
    auditor = "auditor"


@dataclass(frozen=True)
class StaffPrincipal:
    id: int
    username: str
    roles: frozenset[Role]
    session_version: int = 0


_hasher = PasswordHasher()
_dummy_hash: list[str] = []  # made once, on first use (an argon2 hash costs as much as a login)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; ``None`` (no such account) verifies against a dummy hash at
    the same cost and is never true."""
    if password_hash is None:
        if not _dummy_hash:
            _dummy_hash.append(await asyncio.to_thread(_hasher.hash, "no such staff account"))
        await asyncio.to_thread(_verify, _dummy_hash[0], password)
        return False
    return await asyncio.to_thread(_verify, password_hash, password)


def parse_roles(value: str) -> frozenset[Role]:
    return frozenset(Role(r) for r in value.split(",") if r)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _secret(settings: Settings) -> bytes:
    if settings.token_secret is None:
        raise NotAuthenticated("token signing is not configured")
    return settings.token_secret.get_secret_value().encode("utf-8")


def issue_token(settings: Settings, principal: StaffPrincipal, now: float | None = None) -> str:
    issued = int(now if now is not None else clock.now().timestamp())
    payload = {
        "sub": principal.id,
        "usr": principal.username,
        "roles": sorted(r.value for r in principal.roles),
        "ver": principal.session_version,
        "iat": issued,
        "exp": issued + settings.token_ttl_seconds,
    }
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    signature = hmac.new(_secret(settings), body.encode("ascii"), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}"


def verify_token(settings: Settings, token: str, now: float | None = None) -> StaffPrincipal:
    """The principal a token names; NotAuthenticated when forged, malformed or expired."""
    try:
        body, signature = token.split(".")
        expected = hmac.new(_secret(settings), body.encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(signature)):
            raise NotAuthenticated("invalid token")
        payload = json.loads(_unb64(body))
        expires = int(payload["exp"])
        principal = StaffPrincipal(
            id=int(payload["sub"]),
            username=str(payload["usr"]),
            roles=frozenset(Role(r) for r in payload["roles"]),
            session_version=int(payload["ver"]),
        )
    except NotAuthenticated:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise NotAuthenticated("invalid token") from exc
    if (now if now is not None else clock.now().timestamp()) >= expires:
        raise NotAuthenticated("token expired")
    return principal


def check_roles(principal: StaffPrincipal, roles: Iterable[Role]) -> StaffPrincipal:
    """The principal when it holds any of ``roles``; Forbidden otherwise (the API and the CLI)."""
    admitted = frozenset(roles)
    if not principal.roles & admitted:
        raise Forbidden(f"requires one of the roles: {', '.join(sorted(admitted))}")
    return principal
