"""Resident authentication values: the resident token, the activation code and the password rules
(docs/self-service.md §2, §3).

**Keys.** Every secret of the channel is derived from ``CARDSVC_TOKEN_SECRET`` with a purpose of
its own (HMAC-SHA256 of the purpose under the secret): resident tokens, activation code hashes and
the cache's rate-limit keys each have their own, and none is the staff token key (the secret
itself), so a staff token never verifies as a resident's, nor the other way round.

**Resident tokens** are ``base64url(payload JSON) . base64url(HMAC-SHA256(resident key,
payload))``; the payload carries the kind (``resident``), the credential and resident ids, the
card logged in with, the credential's session version and the expiry. Every request re-reads the
credential (:mod:`cardsvc.selfservice.deps`): an older session version is refused at once.

**Activation codes** are 12 characters of Crockford's base32 (60 random bits), shown in three
groups of four; they are stored only as an HMAC bound to the credential.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Final

from cardsvc import clock
from cardsvc.errors import NotAuthenticated, ValidationFailed
from cardsvc.settings import Settings

TOKEN_KIND: Final = "resident"  # noqa: S105 - the kind claim, not a secret
# Crockford's base32: no I, L, O or U (read as 1, 1, 0 and never written).
CODE_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH: Final = 12
_CODE_READ = str.maketrans({"O": "0", "I": "1", "L": "1"})
_CODE_SEPARATORS = re.compile(r"[\s-]+")

MIN_PASSWORD_LENGTH: Final = 10
MAX_PASSWORD_LENGTH: Final = 128
MIN_DISTINCT_CHARACTERS: Final = 4


@dataclass(frozen=True, slots=True)
class ResidentPrincipal:
    """The resident a token names: every resident route takes the resident from here, never
    from a path or a body."""

    credential_id: int
    resident_id: int
    card_id: int  # the card the resident logged in with
    session_version: int

    @property
    def actor(self) -> str:
        """How the audit trail names the resident."""
        return f"resident:{self.resident_id}"


def derived_key(settings: Settings, purpose: str) -> bytes:
    """The key of one purpose of the channel, derived from the token secret."""
    if settings.token_secret is None:
        raise NotAuthenticated("token signing is not configured")
    secret = settings.token_secret.get_secret_value().encode("utf-8")
    return hmac.new(secret, b"cardsvc resident " + purpose.encode("ascii"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(settings: Settings, principal: ResidentPrincipal) -> str:
    issued = int(clock.now().timestamp())
    payload = {
        "typ": TOKEN_KIND,
        "cid": principal.credential_id,
        "sub": principal.resident_id,
        "card": principal.card_id,
        "ver": principal.session_version,
        "iat": issued,
        "exp": issued + settings.resident_token_ttl_seconds,
    }
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    key = derived_key(settings, "token")
    return f"{body}.{_b64(hmac.new(key, body.encode('ascii'), hashlib.sha256).digest())}"


def verify_token(settings: Settings, token: str) -> ResidentPrincipal:
    """The resident a token names; NotAuthenticated when forged, malformed, expired or not a
    resident token."""
    try:
        body, signature = token.split(".")
        expected = hmac.new(derived_key(settings, "token"), body.encode("ascii"), hashlib.sha256)
        if not hmac.compare_digest(expected.digest(), _unb64(signature)):
            raise NotAuthenticated("invalid token")
        payload = json.loads(_unb64(body))
        if payload["typ"] != TOKEN_KIND:
            raise NotAuthenticated("invalid token")
        expires = int(payload["exp"])
        principal = ResidentPrincipal(
            credential_id=int(payload["cid"]),
            resident_id=int(payload["sub"]),
            card_id=int(payload["card"]),
            session_version=int(payload["ver"]),
        )
    except NotAuthenticated:
        raise
    except (ValueError, KeyError, TypeError, UnicodeError) as exc:
        raise NotAuthenticated("invalid token") from exc
    if clock.now().timestamp() >= expires:
        raise NotAuthenticated("token expired")
    return principal


# --- activation codes -------------------------------------------------------------------------


def new_code() -> str:
    """A fresh activation code (12 characters, 60 random bits)."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def show_code(code: str) -> str:
    """As the counter shows it: ``XXXX-XXXX-XXXX``."""
    return "-".join(code[i : i + 4] for i in range(0, CODE_LENGTH, 4))


def normalize_code(text: str) -> str | None:
    """The code a resident typed, as issued: spaces and hyphens dropped, upper case, O read as 0
    and I or L as 1; None when what is left is not 12 characters of the alphabet."""
    code = _CODE_SEPARATORS.sub("", text).upper().translate(_CODE_READ)
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


def code_hash(settings: Settings, credential_id: int, code: str) -> str:
    """What is stored of a code: its HMAC, bound to the credential it was issued for."""
    message = f"{credential_id}:{code}".encode("ascii")
    return hmac.new(derived_key(settings, "activation-code"), message, hashlib.sha256).hexdigest()


# --- passwords --------------------------------------------------------------------------------


class PasswordRefused(ValidationFailed):
    """The new password breaks a password rule (the detail names the rule, never the password)."""


def check_password(password: str, card_no: str) -> str:
    """The password as it is hashed (Unicode NFC, so the same password typed on another device
    matches), or PasswordRefused naming the rule it breaks."""
    text = unicodedata.normalize("NFC", password)
    if not MIN_PASSWORD_LENGTH <= len(text) <= MAX_PASSWORD_LENGTH:
        raise PasswordRefused(
            f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise PasswordRefused("a password has no control characters")
    if len(set(text)) < MIN_DISTINCT_CHARACTERS:
        raise PasswordRefused(
            f"a password has at least {MIN_DISTINCT_CHARACTERS} different characters"
        )
    if text.isdigit():
        raise PasswordRefused("a password is not digits only")
    if card_no in text:
        raise PasswordRefused("a password does not contain the card number")
    return text


def rate_key(settings: Settings, kind: str, value: str) -> str:
    """The cache key part that names a card number or a client address: keyed, so the cache holds
    neither in clear."""
    digest = hmac.new(derived_key(settings, "rate-limit"), value.encode("utf-8"), hashlib.sha256)
    return f"{kind}:{digest.hexdigest()[:32]}"
