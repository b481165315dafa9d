"""Hash-chained audit log of every HSM command (DESIGN §7, reference/settlement_hsm.md §3.4).

One JSON object per line. Each entry carries ``prev`` (the hash of the entry before it; 64 zeros
for the first) and ``hash`` = SHA-256 over the canonical JSON of the entry without ``hash``. A
changed entry breaks its own hash; a removed one breaks the next entry's ``prev`` and the
sequence. Entries hold no key material and no full card number (:func:`mask_asn`).

The log is also where the chains of our clients' audit trails are anchored: an
``AUDIT_CHECKPOINT`` entry carries ``anchor``, the last entry of a client chain this HSM sealed
(``{"label", "first", "seq", "prev", "mac", "version"}``). The newest anchor of each key label is
that chain's head; the log is read back at start, so the head survives a restart, and a database
user who can rewrite the client's tables cannot move it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

GENESIS: Final = "0" * 64
# The MAC a client chain starts from (its entry 0).
CHAIN_GENESIS: Final = bytes(32)
CHAIN_CONTEXT: Final = b"hsm-sim audit chain v1|"


def chain_mac(key: bytes, seq: int, prev_mac: bytes, digest: bytes) -> bytes:
    """The MAC of entry ``seq`` of a client chain: HMAC-SHA256(key, context ‖ seq (8 bytes, big
    endian) ‖ MAC of entry seq-1 ‖ SHA-256 of the entry). Binding the number and the previous MAC
    makes a changed, removed, inserted or renumbered entry break its own MAC."""
    message = CHAIN_CONTEXT + seq.to_bytes(8, "big") + prev_mac + digest
    return hmac.new(key, message, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Anchor:
    """The last checkpoint of one client chain: entries ``first``..``seq`` were sealed together,
    chained onto ``prev`` (the MAC of entry first-1), under ``version`` of the key ``label``."""

    label: str
    first: int
    seq: int
    prev: bytes
    mac: bytes
    version: int

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "first": self.first,
            "seq": self.seq,
            "prev": self.prev.hex().upper(),
            "mac": self.mac.hex().upper(),
            "version": self.version,
        }

    @classmethod
    def from_json(cls, data: Any) -> Anchor:
        if not isinstance(data, dict):
            raise ValueError("anchor is not an object")
        return cls(
            label=str(data["label"]),
            first=int(data["first"]),
            seq=int(data["seq"]),
            prev=bytes.fromhex(str(data["prev"])),
            mac=bytes.fromhex(str(data["mac"])),
            version=int(data["version"]),
        )


def mask_asn(asn_hex: str) -> str:
    """Keep the city prefix and the last four digits: ``3211********0013``."""
    if len(asn_hex) <= 8:
        return "*" * len(asn_hex)
    return asn_hex[:4] + "*" * (len(asn_hex) - 8) + asn_hex[-4:]


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    entries: int
    head: str
    problem: str = ""
    anchors: tuple[Anchor, ...] = ()


def verify_lines(lines: list[str]) -> VerifyReport:
    prev = GENESIS
    anchors: dict[str, Anchor] = {}
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except ValueError:
            return VerifyReport(False, number - 1, prev, f"line {number}: not JSON")
        if not isinstance(entry, dict):
            return VerifyReport(False, number - 1, prev, f"line {number}: not an object")
        if entry.get("seq") != number:
            return VerifyReport(
                False,
                number - 1,
                prev,
                f"line {number}: sequence {entry.get('seq')!r}, expected {number} (entry removed?)",
            )
        if entry.get("prev") != prev:
            return VerifyReport(
                False,
                number - 1,
                prev,
                f"line {number}: chain broken (previous entry changed or removed)",
            )
        if entry.get("hash") != entry_hash(entry):
            return VerifyReport(
                False, number - 1, prev, f"line {number}: entry changed (hash mismatch)"
            )
        prev = str(entry["hash"])
        if entry.get("ok") and "anchor" in entry:
            try:
                anchor = Anchor.from_json(entry["anchor"])
            except (KeyError, TypeError, ValueError):
                return VerifyReport(False, number - 1, prev, f"line {number}: anchor unreadable")
            anchors[anchor.label] = anchor
    return VerifyReport(True, len(lines), prev, anchors=tuple(anchors.values()))


def verify_file(path: Path) -> VerifyReport:
    text = path.read_text(encoding="utf-8")
    return verify_lines([line for line in text.splitlines() if line.strip()])


class AuditLog:
    """Appends entries; in memory only when no path is given (the in-process test HSM)."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._file: TextIO | None = None
        self.seq = 0
        self.head = GENESIS
        self.anchors: dict[str, Anchor] = {}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                report = verify_file(path)
                if not report.ok:
                    raise ValueError(f"audit log {path} does not verify: {report.problem}")
                self.seq, self.head = report.entries, report.head
                self.anchors = {anchor.label: anchor for anchor in report.anchors}
            self._file = path.open("a", encoding="utf-8")

    def append(self, fields: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "seq": self.seq + 1,
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            **fields,
            "prev": self.head,
        }
        entry["hash"] = entry_hash(entry)
        anchor = entry.get("anchor") if entry.get("ok") else None
        if self._file is not None:
            self._file.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
            self._file.flush()
            if anchor is not None:
                # A client stores the MACs once we answer: the anchor must outlive a crash first.
                os.fsync(self._file.fileno())
        self.seq, self.head = entry["seq"], entry["hash"]
        if anchor is not None:
            found = Anchor.from_json(anchor)
            self.anchors[found.label] = found
        return entry

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
