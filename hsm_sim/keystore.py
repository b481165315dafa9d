"""The key store: keys encrypted under the LMK, metadata in clear (settlement_hsm.md §3.4).

A key has a label, a version, a usage and an algorithm fixed at creation, a state (active,
verify-only, retired) and a KCV. Its material rests as AES-256-GCM under the LMK with the label,
version, usage and algorithm as associated data, so an edited usage in the file makes the key
unreadable rather than reusable. The LMK is the XOR of two or three components given at start
(payShield A4 style) and is never written anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from Crypto.Cipher import AES

from hsm_sim import pboc
from hsm_sim.errors import KEY_EXISTS, KEY_NOT_FOUND, HsmError, HsmKeyError

ACTIVE: Final = "active"
VERIFY_ONLY: Final = "verify-only"
RETIRED: Final = "retired"
STATES: Final = (ACTIVE, VERIFY_ONLY, RETIRED)

TDES: Final = "3DES"
AES256: Final = "AES-256"
HMAC_SHA256: Final = "HMAC-SHA256"
KEY_LENGTHS: Final = {TDES: 16, AES256: 32, HMAC_SHA256: 32}

# Usage → the one algorithm it admits (invalid combinations are refused at creation).
USAGES: Final = {
    "purchase-master": TDES,
    "load-master": TDES,
    "tac-master": TDES,
    "maintenance-master": TDES,
    "transport-master": TDES,
    "terminal-master": TDES,
    "ss-master": TDES,
    "file-mac": TDES,
    "pin-verification": TDES,
    "bank-mac": HMAC_SHA256,
    "biller-mac": HMAC_SHA256,
    "pii": AES256,
    "pii-index": HMAC_SHA256,
    "audit-mac": HMAC_SHA256,
}


def _dev_value(name: str, length: int) -> str:
    return (
        hashlib.sha256(f"hsm-sim development key {name}".encode()).hexdigest()[: 2 * length].upper()
    )


# DESIGN §6.1 (masters), FILE_MAC, PVK (the PIN verification key), BANK_DEMO (the demo bank's
# credit-notification key), PII, PII_INDEX and AUDIT_MAC (the key of the service's audit trail):
# (label, usage, hex value).
DEV_KEYS: Final[tuple[tuple[str, str, str], ...]] = (
    ("MPK", "purchase-master", "80A1CC06DFB20A9193B343196DA97098"),
    ("MLK", "load-master", "073CD5EC365EBE9396B3E2F44FCCCEF4"),
    ("MTK", "tac-master", "A7AE835B507148C5EBF6D7AC59C0CE2E"),
    ("MAMK", "maintenance-master", "6BD8155E61D637E8BAF89DD93B30BD72"),
    ("MTRK", "transport-master", "FE2F5357B2A2E8DFFF8A3837538F6B66"),
    ("MTMK", "terminal-master", "7DEBF72ABCE791A8C22495E64A6A93C8"),
    ("MSSK", "ss-master", "BFE0AE9AAF5516B3D72734EFFE949952"),
    ("FILE_MAC", "file-mac", _dev_value("FILE_MAC", 16)),
    ("PVK", "pin-verification", _dev_value("PVK", 16)),
    ("BANK_DEMO", "bank-mac", _dev_value("BANK_DEMO", 32)),
    ("PII", "pii", _dev_value("PII", 32)),
    ("PII_INDEX", "pii-index", _dev_value("PII_INDEX", 32)),
    ("AUDIT_MAC", "audit-mac", _dev_value("AUDIT_MAC", 32)),
)


class KeyStoreError(Exception):
    """The key store cannot be opened (wrong LMK, damaged file, bad components)."""


def key_check_value(algorithm: str, key: bytes) -> bytes:
    """3 bytes that identify a key without revealing it (payShield BU)."""
    if algorithm == TDES:
        return pboc.kcv(key)
    if algorithm == AES256:
        return bytes(AES.new(key, AES.MODE_ECB).encrypt(bytes(16)))[:3]
    return hmac.new(key, bytes(16), hashlib.sha256).digest()[:3]


class Lmk:
    """The local master key: XOR of 2 or 3 components of 32 bytes; lives only in this process."""

    def __init__(self, components: Iterable[str]) -> None:
        parts: list[bytes] = []
        for i, text in enumerate(components, start=1):
            try:
                part = bytes.fromhex(text)
            except ValueError as exc:
                raise KeyStoreError(f"LMK component {i} is not hex") from exc
            if len(part) != 32:
                raise KeyStoreError(f"LMK component {i} must be 32 bytes (64 hex digits)")
            parts.append(part)
        if not 2 <= len(parts) <= 3:
            raise KeyStoreError("the LMK is formed from 2 or 3 components")
        if len(set(parts)) != len(parts):
            raise KeyStoreError("LMK components must differ")
        value = 0
        for part in parts:
            value ^= int.from_bytes(part, "big")
        self._key = value.to_bytes(32, "big")

    @property
    def check_value(self) -> str:
        return (
            hmac.new(self._key, b"hsm-sim LMK check value", hashlib.sha256).hexdigest()[:12].upper()
        )

    def subkey(self, purpose: str) -> bytes:
        """A key for one purpose (key store, session blobs), derived so each has its own."""
        return hmac.new(
            self._key, f"hsm-sim LMK subkey|{purpose}".encode(), hashlib.sha256
        ).digest()


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: nonce(12) ‖ ciphertext ‖ tag(16)."""
    nonce = secrets.token_bytes(12)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    cipher.update(aad)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return nonce + bytes(ciphertext) + bytes(tag)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`seal`; raises ValueError if the blob was altered or the key is wrong."""
    if len(blob) < 28:
        raise ValueError("sealed blob too short")
    cipher = AES.new(key, AES.MODE_GCM, nonce=blob[:12])
    cipher.update(aad)
    return bytes(cipher.decrypt_and_verify(blob[12:-16], blob[-16:]))


@dataclass(frozen=True, slots=True)
class StoredKey:
    label: str
    version: int
    usage: str
    algorithm: str
    state: str
    kcv: str
    created: str
    wrapped: str  # hex of seal(LMK key-store subkey, material, aad)

    def aad(self) -> bytes:
        return f"{self.label}|{self.version}|{self.usage}|{self.algorithm}".encode()

    def info(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "version": self.version,
            "usage": self.usage,
            "algorithm": self.algorithm,
            "state": self.state,
            "kcv": self.kcv,
        }


class KeyStore:
    """Keys by (label, version); written to ``path`` (atomically) after every change, if given."""

    FORMAT: Final = 1

    def __init__(self, lmk: Lmk, path: Path | None = None) -> None:
        self._wrap_key = lmk.subkey("key store")
        self._lmk_check = lmk.check_value
        self._path = path
        self._keys: dict[tuple[str, int], StoredKey] = {}
        self._clear: dict[tuple[str, int], bytes] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            if data.get("format") != self.FORMAT:
                raise KeyStoreError(f"{path}: unknown key store format {data.get('format')!r}")
            if data.get("lmk_check") != self._lmk_check:
                raise KeyStoreError(f"{path}: the LMK components do not match this key store")
            for item in data["keys"]:
                stored = StoredKey(**item)
                self._keys[(stored.label, stored.version)] = stored
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError(f"{path}: cannot read key store: {exc}") from exc
        for stored in self._keys.values():
            self.material(stored)  # proves every key unwraps under this LMK, at start

    def _save(self) -> None:
        if self._path is None:
            return
        data = {
            "format": self.FORMAT,
            "lmk_check": self._lmk_check,
            "keys": [
                asdict(k) for k in sorted(self._keys.values(), key=lambda k: (k.label, k.version))
            ],
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(self._path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)

    # --- reading ----------------------------------------------------------------------------

    def all(self) -> list[StoredKey]:
        return sorted(self._keys.values(), key=lambda k: (k.label, k.version))

    def versions(self, label: str) -> list[StoredKey]:
        """Every version of a label, newest first."""
        found = sorted(
            (k for k in self._keys.values() if k.label == label), key=lambda k: -k.version
        )
        if not found:
            raise HsmKeyError(KEY_NOT_FOUND, f"no key labelled {label!r}")
        return found

    def get(self, label: str, version: int | None = None) -> StoredKey:
        """A given version, or (version None) the active one."""
        if version is not None:
            stored = self._keys.get((label, version))
            if stored is None:
                raise HsmKeyError(KEY_NOT_FOUND, f"no key {label!r} version {version}")
            return stored
        for stored in self.versions(label):
            if stored.state == ACTIVE:
                return stored
        raise HsmKeyError(KEY_NOT_FOUND, f"key {label!r} has no active version")

    def material(self, stored: StoredKey) -> bytes:
        ident = (stored.label, stored.version)
        clear = self._clear.get(ident)
        if clear is None:
            try:
                clear = unseal(self._wrap_key, bytes.fromhex(stored.wrapped), stored.aad())
            except ValueError as exc:
                raise KeyStoreError(
                    f"key {stored.label} v{stored.version} fails its integrity check"
                ) from exc
            if key_check_value(stored.algorithm, clear).hex().upper() != stored.kcv:
                raise KeyStoreError(f"key {stored.label} v{stored.version} does not match its KCV")
            self._clear[ident] = clear
        return clear

    # --- changing -----------------------------------------------------------------------------

    def _put(
        self, label: str, version: int, usage: str, algorithm: str, material: bytes
    ) -> StoredKey:
        stored = StoredKey(
            label=label,
            version=version,
            usage=usage,
            algorithm=algorithm,
            state=ACTIVE,
            kcv=key_check_value(algorithm, material).hex().upper(),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            wrapped="",
        )
        stored = replace(stored, wrapped=seal(self._wrap_key, material, stored.aad()).hex())
        self._keys[(label, version)] = stored
        self._clear[(label, version)] = material
        return stored

    def create(
        self, label: str, usage: str, algorithm: str, material: bytes | None = None
    ) -> StoredKey:
        """A new label at version 1 (random material unless imported)."""
        if usage not in USAGES:
            raise HsmError("BAD_REQUEST", f"unknown usage {usage!r}; one of {', '.join(USAGES)}")
        if USAGES[usage] != algorithm:
            raise HsmError("BAD_REQUEST", f"usage {usage} requires algorithm {USAGES[usage]}")
        if any(k.label == label for k in self._keys.values()):
            raise HsmKeyError(KEY_EXISTS, f"key {label!r} exists; rotate it instead")
        length = KEY_LENGTHS[algorithm]
        if material is None:
            material = secrets.token_bytes(length)
        elif len(material) != length:
            raise HsmError("BAD_REQUEST", f"a {algorithm} key is {length} bytes")
        stored = self._put(label, 1, usage, algorithm, material)
        self._save()
        return stored

    def rotate(self, label: str) -> StoredKey:
        """A new active version; the previous active one becomes verify-only."""
        versions = self.versions(label)
        newest = versions[0]
        for old in versions:
            if old.state == ACTIVE:
                self._keys[(old.label, old.version)] = replace(old, state=VERIFY_ONLY)
        material = secrets.token_bytes(KEY_LENGTHS[newest.algorithm])
        stored = self._put(label, newest.version + 1, newest.usage, newest.algorithm, material)
        self._save()
        return stored

    def set_state(self, label: str, version: int, state: str) -> StoredKey:
        if state not in STATES:
            raise HsmError("BAD_REQUEST", f"state must be one of {', '.join(STATES)}")
        stored = replace(self.get(label, version), state=state)
        self._keys[(label, version)] = stored
        self._save()
        return stored

    def load_development_keys(self) -> None:
        """DESIGN §6.1 at version 1; a store that already holds them must hold the same values."""
        for label, usage, value in DEV_KEYS:
            material = bytes.fromhex(value)
            algorithm = USAGES[usage]
            existing = self._keys.get((label, 1))
            if existing is None:
                self._put(label, 1, usage, algorithm, material)
            elif (
                existing.kcv != key_check_value(algorithm, material).hex().upper()
                or existing.usage != usage
            ):
                raise KeyStoreError(
                    f"key store holds a different {label} v1 than the development set"
                )
        self._save()


def read_metadata(path: Path) -> list[dict[str, Any]]:
    """Key metadata from a key store file, without the LMK (for ``hsm-sim keys list``)."""
    data = json.loads(path.read_text())
    return [{k: v for k, v in item.items() if k != "wrapped"} for item in data["keys"]]
