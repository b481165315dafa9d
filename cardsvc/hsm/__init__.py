"""The HSM port: what the rest of the system asks of a hardware security module (DESIGN §7).

The service never sees a key. Callers depend on :class:`HsmClient`, its values and its errors,
all defined here; an adapter implements them for one kind of HSM:

- :mod:`cardsvc.hsm.sim`: ``hsm-sim serve`` (or any HSM behind the same protocol,
  docs/hsm-protocol.md) over TCP;
- :mod:`cardsvc.hsm.development`: the simulator's handlers in this process, or an ``hsm-sim``
  child process, both with the development key set (development and tests only).

A real HSM with its own protocol is one more adapter module beside these. Which adapter a
process uses is chosen once, by :func:`cardsvc.hsm.connect.open_hsm`, from ``CARDSVC_HSM_URL``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

__all__ = [
    "AuditAnchor",
    "AuditHead",
    "AuditProof",
    "AuditSeal",
    "CardKeyBlock",
    "HsmAuditConflict",
    "HsmClient",
    "HsmError",
    "HsmKeyError",
    "HsmMacInvalid",
    "HsmPinBlockInvalid",
    "HsmPinPolicy",
    "HsmUnavailable",
    "KeyInfo",
    "KeyRef",
    "PinKeyRef",
    "PinOffset",
    "TacVerifyResult",
    "TerminalSession",
]

# --- errors ----------------------------------------------------------------------------------

# The codes an adapter reports (the list of docs/hsm-protocol.md); an adapter of another HSM maps
# its own failures onto them.
MAC_INVALID: Final = "MAC_INVALID"
PIN_BLOCK_INVALID: Final = "PIN_BLOCK_INVALID"
PIN_POLICY: Final = "PIN_POLICY"
AUDIT_CONFLICT: Final = "AUDIT_CONFLICT"
UNAVAILABLE: Final = "UNAVAILABLE"
INTERNAL: Final = "INTERNAL"
KEY_ERROR_CODES: Final = frozenset({"KEY_NOT_FOUND", "KEY_USAGE", "KEY_STATE", "KEY_EXISTS"})


class HsmError(Exception):
    """An HSM command failed; ``code`` is one of the codes of docs/hsm-protocol.md."""

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


class HsmPinBlockInvalid(HsmError):
    """The PIN block does not decrypt to a format 0 block for this PAN (PIN_BLOCK_INVALID): the
    terminal used another key or another card number. Not a wrong PIN."""

    def __init__(self, message: str = "not a format 0 PIN block for this PAN") -> None:
        super().__init__(PIN_BLOCK_INVALID, message)


class HsmPinPolicy(HsmError):
    """The issuer refuses the new PIN (PIN_POLICY): its length, or too easy to guess."""

    def __init__(self, message: str) -> None:
        super().__init__(PIN_POLICY, message)


class HsmAuditConflict(HsmError):
    """AUDIT_CONFLICT: the entries do not continue the audit chain from the head the HSM
    anchored (another writer sealed first, or the database lost what the HSM anchored)."""

    def __init__(self, message: str) -> None:
        super().__init__(AUDIT_CONFLICT, message)


def error_for(code: str, message: str) -> HsmError:
    """The most specific exception for an error code."""
    if code == MAC_INVALID:
        return HsmMacInvalid(message)
    if code == PIN_BLOCK_INVALID:
        return HsmPinBlockInvalid(message)
    if code == PIN_POLICY:
        return HsmPinPolicy(message)
    if code == UNAVAILABLE:
        return HsmUnavailable(message)
    if code == AUDIT_CONFLICT:
        return HsmAuditConflict(message)
    if code in KEY_ERROR_CODES:
        return HsmKeyError(code, message)
    return HsmError(code, message)


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyInfo:
    label: str
    version: int
    usage: str
    algorithm: str
    state: str  # active | verify-only | retired
    kcv: str  # hex, upper case

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> KeyInfo:
        return cls(
            label=str(data["label"]),
            version=int(data["version"]),
            usage=str(data["usage"]),
            algorithm=str(data["algorithm"]),
            state=str(data["state"]),
            kcv=str(data["kcv"]).upper(),
        )


@dataclass(frozen=True, slots=True)
class CardKeyBlock:
    """One WRITE KEY body for personalization (DESIGN §6.2), encrypted under the card's KT."""

    key_id: int
    version: int
    algorithm: int
    block: bytes  # 24 bytes: 3DES-ECB(KT, pad(id ‖ version ‖ algorithm ‖ key16))
    kcv: bytes  # 3 bytes, of the clear card key


@dataclass(frozen=True, slots=True)
class TacVerifyResult:
    results: list[bool]
    errors: dict[int, str]


@dataclass(frozen=True, slots=True)
class TerminalSession:
    key_under_tmk: bytes  # 16 bytes, 3DES-ECB under the terminal's TMK
    key_under_lmk: bytes  # opaque blob for the host; pass it back in KeyRef.session(...)
    kcv: bytes  # 3 bytes
    # The session's PIN key (its own usage: PIN blocks only), the same three ways.
    pin_key_under_tmk: bytes
    pin_key_under_lmk: bytes  # opaque blob; pass it back in PinKeyRef(...)
    pin_kcv: bytes


@dataclass(frozen=True, slots=True)
class PinKeyRef:
    """The key a PIN block is encrypted under: a terminal session's PIN key (its blob)."""

    blob: bytes

    def to_wire(self) -> dict[str, str]:
        return {"kind": "terminal_pin", "blob": self.blob.hex().upper()}


@dataclass(frozen=True, slots=True)
class PinOffset:
    """What the host stores to verify a PIN later: the IBM 3624 offset (as many digits as the
    PIN) and the version of the PIN verification key it was made with. Neither reveals the PIN
    without that key, which never leaves the HSM."""

    offset: str
    pvk_version: int


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The head of the HSM's own log of commands."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class AuditAnchor:
    """An entry of a keyed audit chain: its number and its MAC (32 bytes; entry 0, the start of
    every chain, has 32 zero bytes)."""

    seq: int
    mac: bytes

    @classmethod
    def genesis(cls) -> AuditAnchor:
        return cls(0, bytes(32))


@dataclass(frozen=True, slots=True)
class AuditSeal:
    """What AUDIT_CHECKPOINT answered: one MAC per entry, and whether it was a repeat of the
    checkpoint the HSM already anchored."""

    macs: list[bytes]
    replayed: bool


@dataclass(frozen=True, slots=True)
class AuditProof:
    """What AUDIT_VERIFY answered: how many entries proved out, and the head the HSM anchored."""

    valid: int
    anchor: AuditAnchor


@dataclass(frozen=True, slots=True)
class KeyRef:
    """Which key a MAC command uses; built with one of the three constructors below."""

    kind: str  # terminal_master | session | label
    terminal_no: bytes | None = None
    blob: bytes | None = None
    name: str | None = None

    @classmethod
    def terminal_master(cls, terminal_no: bytes) -> KeyRef:
        return cls(kind="terminal_master", terminal_no=terminal_no)

    @classmethod
    def session(cls, key_under_lmk: bytes) -> KeyRef:
        return cls(kind="session", blob=key_under_lmk)

    @classmethod
    def label(cls, label: str) -> KeyRef:
        return cls(kind="label", name=label)

    def to_wire(self) -> dict[str, str]:
        if self.kind == "terminal_master" and self.terminal_no is not None:
            return {"kind": self.kind, "terminal_no": self.terminal_no.hex().upper()}
        if self.kind == "session" and self.blob is not None:
            return {"kind": self.kind, "blob": self.blob.hex().upper()}
        if self.kind == "label" and self.name is not None:
            return {"kind": self.kind, "label": self.name}
        raise ValueError(f"incomplete key reference {self!r}")


# --- the interface ---------------------------------------------------------------------------


class HsmClient(Protocol):
    async def ping(self) -> None: ...
    async def key_info(self, label: str, version: int | None = None) -> KeyInfo: ...
    async def key_generate(self, label: str, usage: str, algorithm: str = "3DES") -> KeyInfo: ...
    async def key_import(
        self, label: str, usage: str, key: bytes, algorithm: str = "3DES"
    ) -> KeyInfo:
        """Development only (a production HSM answers ``FORBIDDEN``): a key given in clear, as
        a biller's shared key delivered by the development simulator."""
        ...

    async def key_rotate(self, label: str) -> KeyInfo: ...
    async def card_keys_export(
        self, asn: bytes, chip_serial: bytes, key_version: int = 1
    ) -> list[CardKeyBlock]: ...
    async def perso_auth(self, chip_serial: bytes, challenge: bytes) -> bytes: ...
    async def perso_mac(self, chip_serial: bytes, challenge4: bytes, data: bytes) -> bytes: ...
    async def purse_lock_command(
        self, asn: bytes, key_version: int, action: str, challenge4: bytes
    ) -> bytes: ...
    async def tac_verify(self, records: Sequence[Mapping[str, object]]) -> TacVerifyResult: ...
    async def load_authorize(
        self,
        *,
        asn: bytes,
        key_version: int,
        random: bytes,
        online_counter: int,
        balance_before: int,
        amount: int,
        tx_type: int,
        terminal_no: bytes,
        mac1: bytes,
        host_datetime: str,
    ) -> bytes: ...
    async def purchase_mac1(
        self,
        *,
        asn: bytes,
        key_version: int,
        random: bytes,
        offline_counter: int,
        terminal_serial: int,
        amount: int,
        tx_type: int,
        terminal_no: bytes,
        datetime14: str,
        auth_code: bytes = b"",
    ) -> bytes: ...
    async def terminal_session_open(self, terminal_no: bytes) -> TerminalSession: ...
    async def mac_generate(self, key: KeyRef, data: bytes) -> bytes: ...
    async def mac_verify(self, key: KeyRef, data: bytes, mac: bytes) -> bool: ...
    async def pin_verify(
        self,
        key: PinKeyRef,
        pin_block: bytes,
        *,
        pan: str,
        validation_data: str,
        stored: PinOffset,
    ) -> bool: ...
    async def pin_offset_generate(
        self,
        key: PinKeyRef,
        pin_block: bytes,
        *,
        pan: str,
        validation_data: str,
        min_length: int,
        max_length: int,
    ) -> PinOffset: ...
    async def data_encrypt(self, label: str, plaintext: bytes) -> bytes: ...
    async def data_decrypt(self, label: str, ciphertext: bytes) -> bytes: ...
    async def data_index(self, label: str, value: bytes) -> bytes: ...
    async def audit_head(self) -> AuditHead: ...
    async def audit_checkpoint(
        self, label: str, prev: AuditAnchor, digests: Sequence[bytes]
    ) -> AuditSeal: ...
    async def audit_verify(
        self, label: str, prev: AuditAnchor, entries: Sequence[tuple[bytes, bytes]]
    ) -> AuditProof: ...
    async def close(self) -> None: ...
