"""Error codes of the HSM wire protocol (docs/hsm-protocol.md) and the exceptions that carry them
inside the simulator, which renders them as ``{"ok": false, "error": {...}}``.

The service's adapter (``cardsvc.hsm.sim``) raises the port's own exceptions for these codes.
"""

from __future__ import annotations

from typing import Final

# Framing and request shape (DESIGN §7).
BAD_FRAME: Final = "BAD_FRAME"
FRAME_TOO_LARGE: Final = "FRAME_TOO_LARGE"
BAD_JSON: Final = "BAD_JSON"
BAD_REQUEST: Final = "BAD_REQUEST"
UNKNOWN_COMMAND: Final = "UNKNOWN_COMMAND"
# Access.
TOO_MANY_CONNECTIONS: Final = "TOO_MANY_CONNECTIONS"
AUTH_REQUIRED: Final = "AUTH_REQUIRED"
AUTH_FAILED: Final = "AUTH_FAILED"
FORBIDDEN: Final = "FORBIDDEN"
# Keys.
KEY_NOT_FOUND: Final = "KEY_NOT_FOUND"
KEY_USAGE: Final = "KEY_USAGE"
KEY_STATE: Final = "KEY_STATE"
KEY_EXISTS: Final = "KEY_EXISTS"
# Cryptographic outcomes.
MAC_INVALID: Final = "MAC_INVALID"
DECRYPT_FAILED: Final = "DECRYPT_FAILED"
BLOB_INVALID: Final = "BLOB_INVALID"
PIN_BLOCK_INVALID: Final = "PIN_BLOCK_INVALID"
PIN_POLICY: Final = "PIN_POLICY"
# Transport (reported by clients, never sent) and the rest.
UNAVAILABLE: Final = "UNAVAILABLE"
INTERNAL: Final = "INTERNAL"

KEY_ERROR_CODES: Final = frozenset({KEY_NOT_FOUND, KEY_USAGE, KEY_STATE, KEY_EXISTS})


class HsmError(Exception):
    """An HSM command failed; ``code`` is one of the codes above."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class HsmMacInvalid(HsmError):
    def __init__(self, message: str = "MAC does not verify") -> None:
        super().__init__(MAC_INVALID, message)


class HsmUnavailable(HsmError):
    """The HSM could not be reached, the connection dropped, or the answer timed out."""

    def __init__(self, message: str) -> None:
        super().__init__(UNAVAILABLE, message)


class HsmKeyError(HsmError):
    """KEY_NOT_FOUND, KEY_USAGE (a key used outside its usage), KEY_STATE or KEY_EXISTS."""
