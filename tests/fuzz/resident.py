"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.fuzz.resident``): every request carries the
fuzz resident's token, so generated requests reach the resident routes behind it.

The fuzzer may end the token (a logout, a loss report, a password change) or lock the resident's
logins out (wrong old passwords): after a 401 the next request logs in again, and when the login
is refused a counter operator lifts the lockout first (docs/self-service.md §2.3, §6).

Environment: ``CARDSVC_FUZZ_BASE_URL``, ``CARDSVC_FUZZ_CARD_NO``, ``CARDSVC_FUZZ_RESIDENT_PASSWORD``,
``CARDSVC_FUZZ_COUNTER_USER`` and ``CARDSVC_FUZZ_COUNTER_PASSWORD``.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import requests
import schemathesis

BASE_URL = os.environ.get("CARDSVC_FUZZ_BASE_URL", "")
CARD_NO = os.environ.get("CARDSVC_FUZZ_CARD_NO", "")


class _Token:
    value: str | None = None


def _post(path: str, body: dict[str, str], token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{BASE_URL}{path}", json=body, headers=headers, timeout=30)


def log_in() -> str:
    """A fresh resident token, unlocking the resident's logins at a counter if need be."""
    body = {"card_no": CARD_NO, "password": os.environ["CARDSVC_FUZZ_RESIDENT_PASSWORD"]}
    answer = _post("/api/v1/self-service/login", body)
    if answer.status_code == 401:
        staff = _post(
            "/api/v1/staff/login",
            {
                "username": os.environ["CARDSVC_FUZZ_COUNTER_USER"],
                "password": os.environ["CARDSVC_FUZZ_COUNTER_PASSWORD"],
            },
        )
        staff.raise_for_status()
        _post(
            "/api/v1/self-service/unlock", {"card_no": CARD_NO}, staff.json()["access_token"]
        ).raise_for_status()
        answer = _post("/api/v1/self-service/login", body)
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


class ResidentAuth(requests.auth.AuthBase):
    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if _Token.value is None:
            _Token.value = log_in()
        request.headers["Authorization"] = f"Bearer {_Token.value}"
        return request


@schemathesis.hook
def before_call(
    context: schemathesis.HookContext, case: schemathesis.Case[Any], kwargs: dict[str, Any]
) -> None:
    kwargs["auth"] = ResidentAuth()


@schemathesis.hook
def after_call(
    context: schemathesis.HookContext, case: schemathesis.Case[Any], response: Any
) -> None:
    if response.status_code == 401 or case.path in ("/api/v1/me/logout", "/api/v1/me/card/loss"):
        _Token.value = None  # ended: the next request logs in again
