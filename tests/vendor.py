"""A terminal vendor's client, written from docs/terminal-protocol.md alone.

It shares nothing with the host or with the simulated devices' host client: its canonical form,
headers, bodies, sign-in and APDUs follow the document's words, and it checks every answer
against the shapes, codes and texts the document gives. Only the ciphers (3DES, the retail MAC of
§2) come from a library, as a vendor's would: the simulator's primitives, which have their own
known-answer tests.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from cardsvc import clock
from cardsvc.reader.link import CardLink
from cardsvc.reader.purse import select_purse
from hsm_sim import pboc

# §8: the development master terminal key (never in a real device).
DEV_MTMK = bytes.fromhex("7DEBF72ABCE791A8C22495E64A6A93C8")
ZONE = ZoneInfo("Asia/Shanghai")  # §1: terminal and card times are local to the city

# §9.1: every code the host sends on an online message or load, with its text.
CODES = {
    "00": "approved",
    "12": "invalid transaction",
    "14": "unknown card",
    "25": "original not found",
    "41": "lost card",
    "51": "insufficient funds",
    "55": "incorrect PIN",
    "54": "expired card",
    "58": "transaction not permitted to terminal",
    "61": "exceeds limit",
    "62": "restricted card",
    "75": "allowable number of PIN tries exceeded",
    "81": "PIN cryptographic error",
    "91": "service unavailable",
    "96": "system error",
}
# §9.2: the answer to every online message; §9.6: to a load; §9.7 and §9.8: a load's state.
ONLINE_ANSWER = {
    "terminal_serial", "response_code", "approved", "message", "authorization_id", "auth_code",
    "approved_amount", "replayed",
}  # fmt: skip
LOAD_ANSWER = {
    "load_id", "terminal_serial", "response_code", "approved", "message", "status", "mac2",
    "host_datetime", "replayed",
}  # fmt: skip
LOAD_STATE = {"load_id", "status", "resolution", "tac_valid"}
# §4: the sign-in answer; §6: an error body's fields.
SIGN_IN_ANSWER = {
    "session_id", "session_key", "key_kcv", "pin_key", "pin_kcv", "no_pin_limit", "seq",
    "server_time", "expires_at", "merchant_no", "merchant_category", "lists",
}  # fmt: skip
ERROR_FIELDS = {"error", "detail", "fields", "limit"}


def canonical(
    method: str, target: str, terminal_no: str, session: str, seq: int | str, body: bytes
) -> bytes:
    """§3: seven lines joined by LF, no trailing LF."""
    lines = [
        "CSVC-MAC-1", method.upper(), target, terminal_no, session, str(seq),
        hashlib.sha256(body).hexdigest(),
    ]  # fmt: skip
    return "\n".join(lines).encode("ascii")


def check_online(body: dict[str, Any], serial: int) -> dict[str, Any]:
    """An answer of §9.2–§9.5 as the document shapes it."""
    assert set(body) == ONLINE_ANSWER, body
    assert body["terminal_serial"] == serial
    assert body["message"] == CODES[body["response_code"]]
    assert body["approved"] is (body["response_code"] == "00")
    assert isinstance(body["approved_amount"], int)
    assert body["approved_amount"] >= 0
    if not body["approved"]:
        assert body["approved_amount"] == 0
        assert body["auth_code"] is None
    return body


def check_load(body: dict[str, Any], serial: int) -> dict[str, Any]:
    """A load's answer (§9.6): MAC2 and the host date-time only when approved."""
    assert set(body) == LOAD_ANSWER, body
    assert body["terminal_serial"] == serial
    assert body["message"] == CODES[body["response_code"]]
    assert body["approved"] is (body["response_code"] == "00")
    if body["approved"]:
        assert body["status"] == "pending"
        assert len(body["mac2"]) == 8
        assert len(body["host_datetime"]) == 14
    else:
        assert (body["status"], body["mac2"], body["host_datetime"]) == ("declined", None, None)
    return body


def check_error(response: httpx.Response, status: int, error: str) -> None:
    """§6: one JSON object, branch on ``error``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert {"error", "detail"} <= set(body) <= ERROR_FIELDS, body
    assert body["error"] == error, body


@dataclass
class Init:
    """The card's 16-byte answer to INITIALIZE FOR LOAD (§9.6)."""

    asn: str
    amount: int
    balance: int
    online_counter: int
    key_version: int
    algorithm: int
    random: str
    mac1: str


class VendorTerminal:
    """One terminal: signs in with its TMK, then signs every request with the session key."""

    def __init__(self, http: httpx.AsyncClient, terminal_no: str, psam_no: str) -> None:
        self.http = http
        self.terminal_no = terminal_no
        self.psam_no = psam_no
        # §2: TMK = div(MTMK, 00 00 ‖ terminal number BCD(6)), div(K, F) = 3DES(K,F) ‖ 3DES(K,~F).
        factor = bytes(2) + bytes.fromhex(terminal_no)
        inverse = bytes(b ^ 0xFF for b in factor)
        self.tmk = pboc.tdes_encrypt(DEV_MTMK, factor) + pboc.tdes_encrypt(DEV_MTMK, inverse)
        self.session_id = ""
        self.session_key = b""
        self.pin_key = b""
        self.seq = 0

    async def sign_in(self) -> None:
        now = clock.now().astimezone(ZONE).strftime("%Y%m%d%H%M%S")
        body = self.encode(
            {"terminal_no": self.terminal_no, "psam_no": self.psam_no, "terminal_time": now,
             "nonce": secrets.token_hex(8).upper(), "blacklist_version": 0, "params_version": 0}
        )  # fmt: skip
        path = "/api/v1/terminal/sign-in"
        mac = pboc.full_mac(self.tmk, canonical("POST", path, self.terminal_no, "", 0, body))
        response = await self.http.post(
            path,
            content=body,
            headers={"Content-Type": "application/json", "X-Terminal-No": self.terminal_no,
                     "X-Mac": mac.hex().upper()},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        answer = response.json()
        assert set(answer) == SIGN_IN_ANSWER, answer
        key = pboc.tdes_decrypt(self.tmk, bytes.fromhex(answer["session_key"]))
        assert pboc.tdes_encrypt(key, bytes(8))[:3].hex().upper() == answer["key_kcv"].upper()
        self.session_id, self.session_key, self.seq = answer["session_id"], key, answer["seq"]
        assert self.seq == 0
        # §2, §4: the PIN key, delivered like the session key.
        pin_key = pboc.tdes_decrypt(self.tmk, bytes.fromhex(answer["pin_key"]))
        assert pboc.tdes_encrypt(pin_key, bytes(8))[:3].hex().upper() == answer["pin_kcv"].upper()
        self.pin_key = pin_key

    def pin_block(self, pin: str, card_no: str) -> str:
        """§10: the format 0 block, PIN field XOR PAN field, 3DES-ECB under the PIN key."""
        pin_field = bytes.fromhex(("0" + format(len(pin), "X") + pin).ljust(16, "F"))
        pan_field = bytes.fromhex("0000" + card_no[-13:-1])
        clear = bytes(a ^ b for a, b in zip(pin_field, pan_field, strict=True))
        return pboc.tdes_encrypt(self.pin_key, clear).hex().upper()

    @staticmethod
    def encode(payload: dict[str, Any]) -> bytes:
        return json.dumps(payload, separators=(",", ":")).encode()

    async def send(
        self,
        method: str,
        target: str,
        payload: dict[str, Any] | None = None,
        *,
        seq: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """A signed request with the next sequence number (a retry too: §9); ``seq`` sends that
        text as ``X-Seq`` instead (and MACs it as sent), ``headers``
        replace signed ones as given."""
        body = b"" if payload is None else self.encode(payload)
        if seq is None:
            self.seq += 1
            seq = str(self.seq)
        mac = pboc.full_mac(
            self.session_key,
            canonical(method, target, self.terminal_no, self.session_id, seq, body),
        )
        sent = {
            "X-Terminal-No": self.terminal_no, "X-Session-Id": self.session_id,
            "X-Seq": seq, "X-Mac": mac.hex().upper(), **(headers or {}),
        }  # fmt: skip
        if payload is not None:
            sent["Content-Type"] = "application/json"
        return await self.http.request(method, target, content=body, headers=sent)

    async def ok(self, target: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = await self.send("POST", target, payload)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    # --- §9.2–§9.5 ------------------------------------------------------------------------

    async def online(
        self, message: str, *, pin: str | None = None, **payload: Any
    ) -> dict[str, Any]:
        """§9.2–§9.5; a purchase or pre-authorization with ``pin`` carries its block (§10)."""
        if pin is not None:
            payload["pin_block"] = self.pin_block(pin, payload["asn"])
        body = await self.ok(f"/api/v1/online/{message}", payload)
        return check_online(body, payload["terminal_serial"])

    async def reverse(self, serial: int, original: int) -> dict[str, Any]:
        return await self.online("reversal", terminal_serial=serial, original_serial=original)

    # --- §9.6–§9.8 ------------------------------------------------------------------------

    def initialize(self, link: CardLink, amount: int) -> Init:
        select_purse(link)
        ef15, sw = link.transmit(bytes.fromhex("00B0950000"))  # READ BINARY EF 0015
        assert sw == 0x9000
        apdu = bytes.fromhex("805000020B01") + amount.to_bytes(4, "big")
        data, sw = link.transmit(apdu + bytes.fromhex(self.terminal_no) + b"\x10")
        assert sw == 0x9000
        assert len(data) == 16
        return Init(
            asn=ef15[12:20].hex().upper(), amount=amount,
            balance=int.from_bytes(data[0:4], "big"), online_counter=int.from_bytes(data[4:6], "big"),
            key_version=data[6], algorithm=data[7], random=data[8:12].hex().upper(),
            mac1=data[12:16].hex().upper(),
        )  # fmt: skip

    def load_body(self, serial: int, init: Init, source: str) -> dict[str, Any]:
        return {
            "terminal_serial": serial, "terminal_no": self.terminal_no, "asn": init.asn,
            "amount": init.amount, "source": source, "balance": init.balance,
            "online_counter": init.online_counter, "key_version": init.key_version,
            "algorithm": init.algorithm, "random": init.random, "mac1": init.mac1,
        }  # fmt: skip

    async def load(
        self, serial: int, init: Init, source: str = "cash", pin: str | None = None
    ) -> dict[str, Any]:
        """§9.6; a load from the account with ``pin`` carries its block (§10)."""
        payload = self.load_body(serial, init, source)
        if pin is not None:
            payload["pin_block"] = self.pin_block(pin, init.asn)
        body = await self.ok("/api/v1/loads", payload)
        return check_load(body, serial)

    @staticmethod
    def credit(link: CardLink, answer: dict[str, Any]) -> tuple[bytes, int]:
        """CREDIT FOR LOAD ``80 52 00 00 0B ‖ host_datetime BCD(7) ‖ MAC2 04`` → TAC."""
        apdu = bytes.fromhex("805200000B" + answer["host_datetime"] + answer["mac2"] + "04")
        return link.transmit(apdu)

    @staticmethod
    def prove(link: CardLink, counter_after: int) -> tuple[bytes, int]:
        """GET TRANSACTION PROVE ``80 5A 00 02 02 ‖ counter + 1 (2) 08`` → MAC 00000000 ‖ TAC."""
        select_purse(link)
        return link.transmit(
            bytes.fromhex("805A000202") + counter_after.to_bytes(2, "big") + b"\x08"
        )

    async def confirm(self, serial: int, tac: bytes) -> dict[str, Any]:
        body = await self.ok(
            "/api/v1/loads/confirm", {"terminal_serial": serial, "tac": tac.hex().upper()}
        )
        assert set(body) == LOAD_STATE, body
        return body

    async def send_proof(self, asn: str, counter_after: int, tac: bytes) -> dict[str, Any]:
        body = await self.ok(
            "/api/v1/loads/prove",
            {"asn": asn, "online_counter": counter_after, "tac": tac.hex().upper()},
        )
        assert set(body) == LOAD_STATE, body
        return body


def local_datetime(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=ZONE)
