"""Pieces shared by the simulated card and PSAM: APDU parsing, status words, T=0 response
chaining, the torn-transaction signal, and crash-safe JSON persistence.

Only short APDUs (ISO 7816-4 cases 1-4, Lc and Le one byte) are used by the purse protocol.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

# Status words (reference/pboc.md §8).
SW_OK: Final = 0x9000
SW_WRONG_LENGTH: Final = 0x6700
SW_FILE_INCOMPATIBLE: Final = 0x6981
SW_SECURITY_NOT_SATISFIED: Final = 0x6982
SW_AUTH_METHOD_BLOCKED: Final = 0x6983
SW_CONDITIONS_NOT_SATISFIED: Final = 0x6985
SW_SM_MAC_WRONG: Final = 0x6988
SW_WRONG_STATE: Final = 0x6901
SW_WRONG_DATA: Final = 0x6A80
SW_FUNCTION_NOT_SUPPORTED: Final = 0x6A81  # also: application temporarily blocked (on SELECT)
SW_FILE_NOT_FOUND: Final = 0x6A82
SW_RECORD_NOT_FOUND: Final = 0x6A83
SW_WRONG_P1P2: Final = 0x6A86
SW_REF_DATA_NOT_FOUND: Final = 0x6A88
SW_INS_NOT_SUPPORTED: Final = 0x6D00
SW_CLA_NOT_SUPPORTED: Final = 0x6E00
SW_AUTH_FAILED: Final = 0x6300
SW_MAC_INVALID: Final = 0x9302
SW_APP_BLOCKED: Final = 0x9303  # application permanently blocked
SW_BALANCE_INSUFFICIENT: Final = 0x9401
SW_COUNTER_MAX: Final = 0x9402
SW_KEY_NOT_FOUND: Final = 0x9403
SW_PROOF_UNAVAILABLE: Final = 0x9406
SW_CAPP_RECORD_LOCKED: Final = 0x9407


class StatusError(Exception):
    """Ends a command with a status word other than 9000."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"SW {sw:04X}")
        self.sw = sw


class CardTorn(ConnectionAbortedError):
    """The card committed and then lost power before answering (a torn transaction, 闪卡).

    It subclasses ``ConnectionError`` so that a reader link can treat it as a removed card
    without importing this package.
    """


@dataclass(slots=True)
class Apdu:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None  # None: no Le field; 0 means 256

    @classmethod
    def parse(cls, raw: bytes) -> Apdu:
        n = len(raw)
        if n < 4:
            raise StatusError(SW_WRONG_LENGTH)
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        if n == 4:
            return cls(cla, ins, p1, p2, b"", None)
        if n == 5:
            return cls(cla, ins, p1, p2, b"", raw[4])
        lc = raw[4]
        if lc == 0 or n not in (5 + lc, 6 + lc):
            raise StatusError(SW_WRONG_LENGTH)
        le = raw[5 + lc] if n == 6 + lc else None
        return cls(cla, ins, p1, p2, bytes(raw[5 : 5 + lc]), le)

    @property
    def header_with_lc(self) -> bytes:
        """CLA INS P1 P2 Lc, as covered by secure-messaging MACs (reference §1.3)."""
        return bytes((self.cla, self.ins, self.p1, self.p2, len(self.data)))


def sw_bytes(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


class SimulatedIcc(Protocol):
    """What a card reader slot needs from a simulated chip (card or PSAM)."""

    @property
    def atr(self) -> bytes: ...

    def process(self, apdu: bytes) -> bytes: ...

    def power_on(self) -> None: ...

    def power_off(self) -> None: ...


class T0Chaining:
    """T=0 style answers: data is announced with ``61xx`` and fetched with GET RESPONSE.

    Real contact cards (T=0) answer a case-4 command this way (reference §2.3, §8); the reader
    adapter must cope, so the simulators can be asked to behave the same.
    """

    __slots__ = ("enabled", "pending")

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled
        self.pending = b""

    def wrap(self, apdu: bytes, response: bytes) -> bytes:
        if not self.enabled or len(response) <= 2 or response[-2:] != b"\x90\x00":
            return response
        self.pending = response[:-2]
        return bytes((0x61, len(self.pending) & 0xFF))

    def get_response(self, le: int | None) -> bytes:
        pending, self.pending = self.pending, b""
        if not pending:
            raise StatusError(SW_WRONG_STATE)
        want = le if le else 256
        if want != len(pending):
            self.pending = pending
            return bytes((0x6C, len(pending) & 0xFF))
        return pending + b"\x90\x00"


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file, fsync, rename over the target, fsync the directory.

    A crash leaves either the old or the new file, never a torn one (EEPROM commit semantics).
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, separators=(",", ":"), sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> dict[str, Any]:
    with Path(path).open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data
