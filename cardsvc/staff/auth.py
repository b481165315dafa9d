"""Staff authentication: roles, argon2 password hashes, HMAC-signed bearer tokens (DESIGN §12).

Tokens are ``base64url(payload JSON) . base64url(HMAC-SHA256(token_secret, payload))``; the payload
carries the staff id, username, roles and expiry. Every request re-reads the staff row, so a
disabled or locked account loses access at once even with a valid token (the web dependency that
does so is :mod:`cardsvc.staff.deps`).
"""

from __future__ import annotations

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


_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


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
