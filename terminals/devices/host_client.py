"""A terminal's connection to the host API (docs/terminal-protocol.md), for simulated devices.

The device holds its TMK as a key-injection facility would have loaded it:
``TMK = div(MTMK, 0000 ‖ terminal number BCD(6))`` (hsm_contract.md). It signs in with a MAC by
the TMK, decrypts the session key the host sends under the TMK, checks its KCV, and from then on
signs every request with the session key and a sequence number that only goes up.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import httpx

from cardsvc import clock
from cardsvc.settings import DEFAULT_TIMEZONE
from hsm_sim import pboc
from hsm_sim.pin import format0_block
from terminals.access.canonical import canonical_request
from terminals.devices import dev_keys

SIGN_IN_PATH = "/api/v1/terminal/sign-in"
# The simulated terminals keep the wall clock of the default zone (docs/architecture.md §6).
LOCAL_TZ = ZoneInfo(DEFAULT_TIMEZONE)


class HostError(Exception):
    """The host refused a request (status and the rendered error body)."""

    def __init__(self, status: int, body: object) -> None:
        super().__init__(f"host answered {status}: {body}")
        self.status = status
        self.body = body


def dev_tmk(terminal_no: str) -> bytes:
    """The development TMK of a terminal (what key injection loads into the device)."""
    return pboc.diversify(dev_keys.MTMK, b"\x00\x00" + bytes.fromhex(terminal_no))


def encode_body(payload: Mapping[str, object]) -> bytes:
    """Compact UTF-8 JSON; the MAC covers these exact bytes (through their SHA-256)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class SignInResult:
    session_id: str
    server_time: str  # local YYYYMMDDhhmmss
    blacklist_version: int
    params_version: int
    merchant_no: str
    merchant_category: str
    expires_at: str
    no_pin_limit: int  # fen; payments up to it need no PIN (0: every one does)


@dataclass(frozen=True, slots=True)
class Authorization:
    """The host's answer to an online message (docs/terminal-protocol.md §9.2)."""

    terminal_serial: int
    response_code: str
    approved: bool
    approved_amount: int
    auth_code: str | None


ONLINE = "/api/v1/online"


class HostClient:
    """One terminal's connection to the host API over httpx (AsyncClient given, so tests use ASGITransport)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        terminal_no: str,
        tmk: bytes,
        *,
        psam_no: str | None = None,
        blacklist_version: int = 0,
        params_version: int = 0,
    ) -> None:
        if len(terminal_no) != 12 or not terminal_no.isdigit():
            raise ValueError("terminal number must be 12 digits")
        self.http = http
        self.terminal_no = terminal_no
        self.psam_no = psam_no or ("50" + terminal_no + "00")
        self._tmk = tmk
        self._session_key: bytes | None = None
        self._pin_key: bytes | None = None
        self.session_id = ""
        self.seq = 0
        self.blacklist_version = blacklist_version
        self.params_version = params_version

    @property
    def signed_in(self) -> bool:
        return self._session_key is not None

    async def sign_in(self) -> SignInResult:
        # The simulated world's time (cardsvc.clock), which tests and demos may set.
        now = clock.now().astimezone(LOCAL_TZ).strftime("%Y%m%d%H%M%S")
        payload = {
            "terminal_no": self.terminal_no,
            "psam_no": self.psam_no,
            "terminal_time": now,
            "nonce": secrets.token_hex(8).upper(),
            "blacklist_version": self.blacklist_version,
            "params_version": self.params_version,
        }
        body = encode_body(payload)
        mac = pboc.full_mac(
            self._tmk, canonical_request("POST", SIGN_IN_PATH, self.terminal_no, "", 0, body)
        )
        response = await self.http.post(
            SIGN_IN_PATH,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Terminal-No": self.terminal_no,
                "X-Mac": mac.hex().upper(),
            },
        )
        if response.status_code != 200:
            raise HostError(response.status_code, _body(response))
        answer = response.json()
        key = pboc.tdes_decrypt(self._tmk, bytes.fromhex(answer["session_key"]))
        if pboc.kcv(key).hex().upper() != answer["key_kcv"].upper():
            raise HostError(response.status_code, "session key check value does not match")
        pin_key = pboc.tdes_decrypt(self._tmk, bytes.fromhex(answer["pin_key"]))
        if pboc.kcv(pin_key).hex().upper() != answer["pin_kcv"].upper():
            raise HostError(response.status_code, "PIN key check value does not match")
        self._session_key, self._pin_key = key, pin_key
        self.session_id = answer["session_id"]
        self.seq = int(answer["seq"])
        return SignInResult(
            session_id=self.session_id,
            server_time=answer["server_time"],
            blacklist_version=int(answer["lists"]["blacklist"]),
            params_version=int(answer["lists"]["parameters"]),
            merchant_no=answer["merchant_no"],
            merchant_category=answer["merchant_category"],
            expires_at=answer["expires_at"],
            no_pin_limit=int(answer["no_pin_limit"]),
        )

    def pin_block(self, pin: str, card_no: str) -> str:
        """What the PIN pad sends for ``pin`` typed for card ``card_no``: the ISO 9564 format 0
        block encrypted under the session's PIN key (3DES-ECB), 16 hex digits."""
        if self._pin_key is None:
            raise RuntimeError("sign in first")
        return pboc.tdes_encrypt(self._pin_key, format0_block(pin, card_no)).hex().upper()

    def signed_headers(
        self, method: str, target: str, body: bytes, seq: int | None = None
    ) -> dict[str, str]:
        """The four headers of a signed request; takes the next sequence number unless given."""
        if self._session_key is None:
            raise RuntimeError("sign in first")
        if seq is None:
            self.seq += 1
            seq = self.seq
        mac = pboc.full_mac(
            self._session_key,
            canonical_request(method, target, self.terminal_no, self.session_id, seq, body),
        )
        return {
            "X-Terminal-No": self.terminal_no,
            "X-Session-Id": self.session_id,
            "X-Seq": str(seq),
            "X-Mac": mac.hex().upper(),
        }

    async def post(self, path: str, payload: Mapping[str, object]) -> httpx.Response:
        """A signed POST (seq += 1)."""
        body = encode_body(payload)
        headers = self.signed_headers("POST", path, body)
        headers["Content-Type"] = "application/json"
        return await self.http.post(path, content=body, headers=headers)

    async def online(
        self, message: str, payload: Mapping[str, object], *, pin: str | None = None
    ) -> Authorization:
        """An online message (§9.2–§9.5). With ``pin`` (a purchase or pre-authorization), the PIN
        the holder typed on the PIN pad goes as its block for the message's card (``asn``)."""
        body = dict(payload)
        if pin is not None:
            body["pin_block"] = self.pin_block(pin, str(payload["asn"]))
        response = await self.post(f"{ONLINE}/{message}", body)
        if response.status_code != 200:
            raise HostError(response.status_code, _body(response))
        answer = response.json()
        return Authorization(
            terminal_serial=int(answer["terminal_serial"]),
            response_code=str(answer["response_code"]),
            approved=bool(answer["approved"]),
            approved_amount=int(answer["approved_amount"]),
            auth_code=answer.get("auth_code"),
        )

    async def get(self, path: str) -> httpx.Response:
        """A signed GET (seq += 1); ``path`` may carry a query string, which the MAC covers."""
        return await self.http.get(path, headers=self.signed_headers("GET", path, b""))


def _body(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text
