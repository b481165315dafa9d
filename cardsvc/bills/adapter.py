"""The channel's side of docs/biller-protocol.md over HTTP: every request signed by the HSM with
the biller's key, every answer's signature verified before it is believed.

What comes back is either a signed answer (:class:`Answer`, 2xx or a signed refusal) or
:class:`NoAnswer`: a timeout, a failed connection, a 5xx, or an answer whose signature does not
verify. For a payment, no answer means its outcome is unknown (docs/biller-protocol.md §6).
"""

from __future__ import annotations

import functools
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx

from cardsvc import clock
from cardsvc.bills import signing
from cardsvc.hsm import HsmClient

MAX_ANSWER_BYTES = 1024 * 1024


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the system's trust store costs tens of milliseconds of CPU: done once per process,
    # not once per client (a client is opened per request and per worker run).
    return ssl.create_default_context()


# Every connection it may open is kept alive: the worker sends many rows at once and the API
# queries for many requests at once, and a connection closed after each burst is opened again.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100)


def biller_http() -> httpx.AsyncClient:
    """An HTTP client for the billers' endpoints, verifying TLS against the system's trust store.
    One per process lifetime (the API's, the worker's), not one per request."""
    return httpx.AsyncClient(verify=_tls_context(), limits=_LIMITS)


class NoAnswer(Exception):
    """Nothing trustworthy came back (``reason``: timeout, connection, status 5xx, signature)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    seconds: float

    @property
    def result(self) -> str:
        return str(self.body.get("result", ""))


@dataclass(frozen=True, slots=True)
class BillerEndpoint:
    """Where and as whom to call one biller."""

    code: str
    base_url: str
    key_label: str


class BillerClient:
    def __init__(
        self, http: httpx.AsyncClient, hsm: HsmClient, channel: str, timeout: float
    ) -> None:
        self.http = http
        self.hsm = hsm
        self.channel = channel
        self.timeout = timeout

    async def call(
        self, biller: BillerEndpoint, path: str, key: str, payload: dict[str, Any]
    ) -> Answer:
        """POST one signed request and verify the answer (HsmUnavailable propagates: the
        request was not sent, or its answer cannot be checked, and the caller retries)."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        stamp = signing.timestamp(clock.now())
        signature = await signing.sign(
            self.hsm, biller.key_label, signing.signed_string("POST", path, stamp, key, body)
        )
        headers = signing.Envelope(self.channel, biller.code, stamp, key, signature).headers()
        headers["Content-Type"] = "application/json"
        started = time.monotonic()
        try:
            response = await self.http.post(
                biller.base_url + path, content=body, headers=headers, timeout=self.timeout
            )
        except httpx.TimeoutException:
            raise NoAnswer("timeout") from None
        except httpx.HTTPError as exc:
            raise NoAnswer(f"connection: {type(exc).__name__}") from None
        seconds = time.monotonic() - started
        if response.status_code >= 500:
            raise NoAnswer(f"status {response.status_code}")
        content = response.content
        if len(content) > MAX_ANSWER_BYTES:
            raise NoAnswer("answer too large")
        their = response.headers.get(signing.SIGNATURE_HEADER, "")
        stamp_back = response.headers.get(signing.TIMESTAMP_HEADER, "")
        if (
            response.headers.get(signing.KEY_HEADER) != key
            or not signing.SIGNATURE.match(their)
            or not signing.TIMESTAMP.match(stamp_back)
        ):
            raise NoAnswer("signature: missing or malformed")
        signed = signing.signed_string(str(response.status_code), path, stamp_back, key, content)
        if not await signing.verify(self.hsm, biller.key_label, signed, their):
            raise NoAnswer("signature: does not verify")
        try:
            parsed = json.loads(content)
        except ValueError:
            raise NoAnswer("answer is not JSON") from None
        if not isinstance(parsed, dict):
            raise NoAnswer("answer is not an object")
        return Answer(response.status_code, parsed, seconds)
