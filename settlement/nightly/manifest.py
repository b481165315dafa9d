"""The manifest of a day's files (docs/settlement-files.md, ``manifest.json``): each file's name,
size and SHA-256 in name order, and an HSM MAC over the canonical bytes of that list under the
file-MAC key. Pure functions: the HSM is asked by the service, outside any database transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

FORMAT = "cardsvc-settlement-manifest/1"
MAC_KEY = "FILE_MAC"  # stored in the HSM with usage file-mac (generate and verify)
MAC_ALGORITHM = "ISO9797-1-M2-ALG3"  # retail MAC, padding method 2, all 8 bytes
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MAC = re.compile(r"^[0-9A-F]{16}$")


class ManifestInvalid(ValueError):
    """``manifest.json`` is not a manifest this system writes."""


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    size: int
    sha256: str  # lower-case hex


@dataclass(frozen=True, slots=True)
class Manifest:
    clearing_date: date
    files: tuple[Entry, ...]
    mac: str  # 16 upper-case hex digits


def canonical(day: date, files: Sequence[Entry]) -> bytes:
    """The bytes the MAC covers: a first line naming the format, the clearing date, then one
    line per file in name order, ``<sha256> <size> <name>``; each line ends with LF; ASCII."""
    lines = [FORMAT, f"clearing_date {day.isoformat()}"]
    lines += [f"{f.sha256} {f.size} {f.name}" for f in sorted(files, key=lambda f: f.name)]
    return ("\n".join(lines) + "\n").encode("ascii")


def render(manifest: Manifest) -> bytes:
    """``manifest.json``: two-space indented JSON, keys in this order, a final LF."""
    body: dict[str, Any] = {
        "format": FORMAT,
        "clearing_date": manifest.clearing_date.isoformat(),
        "files": [
            {"name": f.name, "size": f.size, "sha256": f.sha256}
            for f in sorted(manifest.files, key=lambda f: f.name)
        ],
        "mac": {"key": MAC_KEY, "algorithm": MAC_ALGORITHM, "value": manifest.mac},
    }
    return (json.dumps(body, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def parse(data: bytes) -> Manifest:
    """Read a manifest back; anything not of the written shape is :class:`ManifestInvalid`."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestInvalid("manifest.json is larger than any manifest written")
    try:
        body = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ManifestInvalid("manifest.json is not ASCII JSON") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ManifestInvalid(f"manifest.json is not of format {FORMAT}")
    try:
        day = date.fromisoformat(str(body["clearing_date"]))
        mac = body["mac"]
        if not isinstance(mac, dict) or mac.get("key") != MAC_KEY:
            raise ManifestInvalid(f"the manifest's MAC is not made with {MAC_KEY}")
        value = str(mac.get("value"))
        if not _MAC.match(value):
            raise ManifestInvalid("the manifest's MAC is not 16 hex digits")
        files = []
        for item in body["files"]:
            name, size, sha = item["name"], item["size"], item["sha256"]
            if not (isinstance(name, str) and _NAME.match(name)):
                raise ManifestInvalid(f"file name {name!r} is not one this system writes")
            if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
                raise ManifestInvalid(f"size of {name} is not a whole number")
            if not (isinstance(sha, str) and _SHA256.match(sha)):
                raise ManifestInvalid(f"sha256 of {name} is not 64 hex digits")
            files.append(Entry(name, size, sha))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ManifestInvalid):
            raise
        raise ManifestInvalid(f"manifest.json lacks or garbles a field ({exc})") from None
    if len({f.name for f in files}) != len(files):
        raise ManifestInvalid("manifest.json lists a file twice")
    return Manifest(day, tuple(files), value)
