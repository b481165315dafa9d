"""Wire framing (DESIGN §7): a 4-byte big-endian length, then a UTF-8 JSON object."""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from typing import Any, Final

HEADER: Final = struct.Struct(">I")
DEFAULT_MAX_MESSAGE: Final = 16 * 1024 * 1024  # a 10,000-record TAC_VERIFY is about 2.5 MB
AUTH_CONTEXT: Final = b"hsm-sim client auth v1|"

# Commands that change the key store: never retried by the client.
NON_IDEMPOTENT: Final = frozenset({"KEY_GENERATE", "KEY_IMPORT", "KEY_ROTATE"})


def encode_frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return HEADER.pack(len(body)) + body


def auth_response(secret: str, challenge: bytes) -> bytes:
    """The answer to the shared-secret challenge: HMAC-SHA256(secret, context ‖ challenge)."""
    return hmac.new(secret.encode(), AUTH_CONTEXT + challenge, hashlib.sha256).digest()
