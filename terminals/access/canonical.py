"""The canonical form a terminal MACs (docs/terminal-protocol.md §3), byte for byte.

    CSVC-MAC-1 LF METHOD LF PATH LF TERMINAL_NO LF SESSION_ID LF SEQ LF SHA256(BODY) hex

all ASCII: METHOD upper case; PATH the request target exactly as sent (path, plus ``?`` and the
raw query string when there is one); SEQ in decimal without leading zeros; the body digest in
lower-case hex (of zero bytes for an empty body). The sign-in request uses an empty session id
and sequence 0. Hashing the body keeps the MAC input small and fixed for the HSM, whatever the
upload size; the MAC itself is the 8-byte ISO 9797-1 algorithm 3 retail MAC (padding method 2)
under the session key (or the TMK at sign-in).
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

PREFIX: Final = b"CSVC-MAC-1"
_TERMINAL_NO: Final = re.compile(r"^\d{12}$")
_SESSION_ID: Final = re.compile(r"^([0-9a-f]{32})?$")


def canonical_request(
    method: str, path: str, terminal_no: str, session_id: str, seq: int, body: bytes
) -> bytes:
    """The bytes the terminal's MAC covers."""
    if not _TERMINAL_NO.match(terminal_no):
        raise ValueError("terminal number must be 12 digits")
    if not _SESSION_ID.match(session_id):
        raise ValueError("session id must be 32 lower-case hex digits (or empty at sign-in)")
    if seq < 0:
        raise ValueError("sequence number must not be negative")
    if not path.startswith("/") or not path.isascii() or "\n" in path:
        raise ValueError("path must be an absolute ASCII request target")
    parts = (
        PREFIX,
        method.upper().encode("ascii"),
        path.encode("ascii"),
        terminal_no.encode("ascii"),
        session_id.encode("ascii"),
        str(seq).encode("ascii"),
        hashlib.sha256(body).hexdigest().encode("ascii"),
    )
    return b"\n".join(parts)
