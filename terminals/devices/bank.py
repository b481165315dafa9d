"""A simulated bank (test and demo equipment): it tells the host of credits it received for
residents' online accounts, as signed notifications or a signed credit file
(docs/bank-credits.md), signing with its copy of the key the HSM holds as ``BANK_<code>``."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
from collections.abc import Mapping, Sequence

import httpx

from terminals.devices import dev_keys

FILE_HEADER = ("bank_reference", "account_reference", "amount", "value_date", "payer_name")


class Bank:
    def __init__(
        self, http: httpx.AsyncClient, code: str = "DEMO", key: bytes = dev_keys.BANK_DEMO
    ):
        self.http = http
        self.code = code
        self._key = key

    def sign(self, content: bytes) -> str:
        """X-Bank-Signature: HMAC-SHA256 of the exact bytes, 64 hex digits."""
        return hmac.new(self._key, content, hashlib.sha256).hexdigest().upper()

    def headers(self, content: bytes) -> dict[str, str]:
        return {"X-Bank-Code": self.code, "X-Bank-Signature": self.sign(content)}

    @staticmethod
    def notification(credit: Mapping[str, object]) -> bytes:
        return json.dumps(credit, separators=(",", ":"), ensure_ascii=False).encode()

    async def notify(self, credit: Mapping[str, object]) -> httpx.Response:
        """POST /api/v1/bank/credits with one credit, signed."""
        body = self.notification(credit)
        headers = {**self.headers(body), "Content-Type": "application/json"}
        return await self.http.post("/api/v1/bank/credits", content=body, headers=headers)

    @staticmethod
    def credit_file(credits: Sequence[Mapping[str, object]]) -> bytes:
        """The day's credits as the bank's CSV file (UTF-8, header line, fen)."""
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(FILE_HEADER)
        for credit in credits:
            writer.writerow([credit.get(name, "") for name in FILE_HEADER])
        return out.getvalue().encode("utf-8")

    async def send_file(self, content: bytes, staff_headers: Mapping[str, str]) -> httpx.Response:
        """What finance does with the file the bank delivered: import it with its signature."""
        headers = {**staff_headers, **self.headers(content), "Content-Type": "text/csv"}
        return await self.http.post("/api/v1/bank/credit-files", content=content, headers=headers)
