"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.fuzz.signing``): every request is signed as the
caller the environment names would sign it, so that generated bodies reach the routes behind the
signature instead of stopping at 401:

- ``CARDSVC_FUZZ_TERMINAL``: a terminal (docs/terminal-protocol.md §3). It signs in once, when
  schemathesis loads this module; each request then takes the next sequence number and a MAC over
  the exact request target and body sent.
- ``CARDSVC_FUZZ_BANK``: the demo bank (docs/bank-credits.md): ``X-Bank-Signature`` over the
  exact body.

The signature is computed on the prepared request, over the bytes that go on the wire.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import requests
import schemathesis

from terminals.devices.bank import Bank
from terminals.devices.host_client import HostClient, dev_tmk


def _body(request: requests.PreparedRequest) -> bytes | None:
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    return body if isinstance(body, bytes) else None  # a streamed body cannot be signed


class TerminalSigner(requests.auth.AuthBase):
    def __init__(self, host: HostClient) -> None:
        self.host = host

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = _body(request)
        if body is None or request.method is None:
            return request
        try:
            headers = self.host.signed_headers(request.method, request.path_url, body)
        except ValueError:
            return request  # a target the protocol cannot carry (not ASCII): sent unsigned
        request.headers.update(headers)
        return request


class BankSigner(requests.auth.AuthBase):
    def __init__(self, bank: Bank) -> None:
        self.bank = bank

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = _body(request)
        if body is not None:
            request.headers.update(self.bank.headers(body))
        return request


async def _signed_in(base_url: str, terminal_no: str) -> HostClient:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        host = HostClient(http, terminal_no, dev_tmk(terminal_no))
        await host.sign_in()
    return host


def _signer() -> requests.auth.AuthBase:
    terminal_no = os.environ.get("CARDSVC_FUZZ_TERMINAL")
    if terminal_no:
        base_url = os.environ["CARDSVC_FUZZ_BASE_URL"]
        return TerminalSigner(asyncio.run(_signed_in(base_url, terminal_no)))
    # The bank signs with its key; it never sends a request through this client.
    return BankSigner(Bank(httpx.AsyncClient(), code=os.environ["CARDSVC_FUZZ_BANK"]))


_SIGNER = _signer()


@schemathesis.hook
def before_call(
    context: schemathesis.HookContext, case: schemathesis.Case[Any], kwargs: dict[str, Any]
) -> None:
    kwargs["auth"] = _SIGNER
