"""Signatures of the biller protocol (docs/biller-protocol.md §2): the string signed, and the
HMAC-SHA256 under the biller's key, which only the HSM holds (usage ``biller-mac``)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cardsvc.hsm import HsmClient, HsmError, HsmUnavailable, KeyRef

VERSION = "BILL1"
CLOCK_SKEW = timedelta(seconds=300)
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,96}$")
SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

CHANNEL_HEADER = "X-Bill-Channel"
BILLER_HEADER = "X-Bill-Biller"
TIMESTAMP_HEADER = "X-Bill-Timestamp"
KEY_HEADER = "Idempotency-Key"
SIGNATURE_HEADER = "X-Bill-Signature"


class BadSignature(Exception):
    """A message whose headers, timestamp or signature do not check (its ``reason`` says which)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def signed_string(first: str, path: str, timestamp: str, key: str, body: bytes) -> bytes:
    """The six lines of §2.1: ``first`` is the method of a request or the status of an answer."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((VERSION, first, path, timestamp, key, digest)).encode()


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


@dataclass(frozen=True, slots=True)
class Envelope:
    """The signed headers of one message."""

    channel: str
    biller: str
    timestamp: str
    key: str
    signature: str

    def headers(self) -> dict[str, str]:
        return {
            CHANNEL_HEADER: self.channel,
            BILLER_HEADER: self.biller,
            TIMESTAMP_HEADER: self.timestamp,
            KEY_HEADER: self.key,
            SIGNATURE_HEADER: self.signature,
        }


def envelope_of(headers: dict[str, str], channel: str, biller: str, now: datetime) -> Envelope:
    """Checks 1 and 2 of §2.1 on received headers (names in any case)."""
    lower = {k.lower(): v for k, v in headers.items()}
    values = [lower.get(h.lower()) for h in (CHANNEL_HEADER, BILLER_HEADER, TIMESTAMP_HEADER,
                                              KEY_HEADER, SIGNATURE_HEADER)]  # fmt: skip
    got_channel, got_biller, stamp, key, signature = values
    if got_channel != channel or got_biller != biller:
        raise BadSignature("channel or biller headers missing or not ours")
    if stamp is None or not TIMESTAMP.match(stamp):
        raise BadSignature(f"{TIMESTAMP_HEADER} missing or malformed")
    if key is None or not IDEMPOTENCY_KEY.match(key):
        raise BadSignature(f"{KEY_HEADER} missing or malformed")
    if signature is None or not SIGNATURE.match(signature):
        raise BadSignature(f"{SIGNATURE_HEADER} must be 64 lowercase hex digits")
    try:
        moment = datetime.strptime(stamp, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise BadSignature(f"{TIMESTAMP_HEADER} is not a time") from None
    if abs(moment - now) > CLOCK_SKEW:
        raise BadSignature("stale: the timestamp is too far from our clock")
    return Envelope(channel, biller, stamp, key, signature)


async def sign(hsm: HsmClient, key_label: str, data: bytes) -> str:
    """HMAC-SHA256 under the biller's key, by the HSM (HsmUnavailable when it is down)."""
    return (await hsm.mac_generate(KeyRef.label(key_label), data)).hex()


async def verify(hsm: HsmClient, key_label: str, data: bytes, signature: str) -> bool:
    """True when ``signature`` is right; HsmUnavailable propagates (an outage is not a forgery),
    any other HSM refusal (a missing key) counts as wrong."""
    try:
        return await hsm.mac_verify(KeyRef.label(key_label), data, bytes.fromhex(signature))
    except HsmUnavailable:
        raise
    except HsmError:
        return False
