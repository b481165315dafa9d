"""Hash-chained audit log of every HSM command (DESIGN §7, reference/settlement_hsm.md §3.4).

One JSON object per line. Each entry carries ``prev`` (the hash of the entry before it; 64 zeros
for the first) and ``hash`` = SHA-256 over the canonical JSON of the entry without ``hash``. A
changed entry breaks its own hash; a removed one breaks the next entry's ``prev`` and the
sequence. Entries hold no key material and no full card number (:func:`mask_asn`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

GENESIS: Final = "0" * 64


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


def verify_lines(lines: list[str]) -> VerifyReport:
    prev = GENESIS
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
    return VerifyReport(True, len(lines), prev)


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
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                report = verify_file(path)
                if not report.ok:
                    raise ValueError(f"audit log {path} does not verify: {report.problem}")
                self.seq, self.head = report.entries, report.head
            self._file = path.open("a", encoding="utf-8")

    def append(self, fields: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "seq": self.seq + 1,
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            **fields,
            "prev": self.head,
        }
        entry["hash"] = entry_hash(entry)
        if self._file is not None:
            self._file.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
            self._file.flush()
        self.seq, self.head = entry["seq"], entry["hash"]
        return entry

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
