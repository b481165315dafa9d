"""The agent's client of the API: a staff login, and the routes a counter uses.

Every request the agent repeats is idempotent on the server (a personalization step with the
same responses, a start that resumes), so a request that met no answer (the network dropped, the
server restarted, 503) is sent again a few times before the clerk is told.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

RETRIES = 5
BACKOFF_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)


class ApiRefused(Exception):
    """The API refused the request (4xx): ``name`` is its error name, ``detail`` its words."""

    def __init__(self, status: int, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.status, self.name, self.detail = status, name, detail


class ApiUnreachable(Exception):
    """No answer after every retry (network down, server down or 503)."""


@dataclass
class Login:
    username: str
    password: Callable[[], str]  # asked once, when first needed


class Api:
    def __init__(
        self,
        base_url: str,
        login: Login,
        *,
        ca_file: Path | None = None,
        timeout: float = 15.0,
        on_retry: Callable[[int, str], None] | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            verify=str(ca_file) if ca_file is not None else True,
            timeout=timeout,
        )
        self._login = login
        self._password: str | None = None
        self._token: str | None = None
        self._on_retry = on_retry or (lambda _n, _why: None)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
        for attempt in range(RETRIES + 1):
            try:
                response = self._http.request(method, path, json=body, headers=headers)
            except httpx.TransportError as exc:
                why = f"the server does not answer ({type(exc).__name__})"
            else:
                if response.status_code != 503:
                    return response
                why = "the server is unavailable (503)"
            if attempt == RETRIES:
                raise ApiUnreachable(why)
            self._on_retry(attempt + 1, why)
            time.sleep(BACKOFF_SECONDS[attempt])
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _refusal(response: httpx.Response) -> ApiRefused:
        try:
            body = response.json()
            name, detail = str(body.get("error", "Refused")), str(body.get("detail", ""))
        except ValueError:
            name, detail = "Refused", response.text[:200]
        return ApiRefused(response.status_code, name, detail)

    def log_in(self) -> None:
        if self._password is None:
            self._password = self._login.password()
        response = self._send(
            "POST",
            "/api/v1/staff/login",
            {"username": self._login.username, "password": self._password},
            {},
        )
        if response.status_code != 200:
            self._password = None
            raise self._refusal(response)
        self._token = str(response.json()["access_token"])

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One API call as the clerk; a token that ended (401) is renewed once."""
        for renewed in (False, True):
            if self._token is None:
                self.log_in()
            response = self._send(method, path, body, {"Authorization": f"Bearer {self._token}"})
            if response.status_code == 401 and not renewed:
                self._token = None
                continue
            if response.status_code >= 400:
                raise self._refusal(response)
            return response.json()
        raise AssertionError("unreachable")  # pragma: no cover
