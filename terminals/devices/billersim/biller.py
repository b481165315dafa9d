"""The biller's side of docs/biller-protocol.md, in memory, with switchable behaviour.

Everything a utility keeps (customers, bills, presentments, payments, refunds, the answers of
idempotency keys) lives in this process; ``POST /sim/reset`` empties what the channel caused.
Behaviours (``POST /sim/behaviour``) apply per biller or per bill key, for a number of times or
until changed, so a test decides exactly which request misbehaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import re
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from terminals.devices.billersim.http import Request, Response

SERIAL = re.compile(r"^[0-9A-Za-z]{1,32}$")
REFERENCE = re.compile(r"^[0-9A-Za-z._-]{1,64}$")
KEY = re.compile(r"^[A-Za-z0-9._:-]{1,96}$")
STAMP = "%Y-%m-%dT%H:%M:%SZ"
SUB_CHANNELS = ("online", "kiosk", "counter")
MODES = (
    "normal",
    "slow",
    "lost",
    "pending",
    "duplicate_callbacks",
    "refuse",
    "down",
    "error",
    "bad_signature",
    "after_cut",
    "recon_missing",
    "recon_extra",
    "recon_amount",
)
PAYMENT_MODES = ("slow", "lost", "pending", "duplicate_callbacks", "refuse", "bad_signature")
RECON_MODES = ("recon_missing", "recon_extra", "recon_amount")
REVERSAL_MODES = ("after_cut",)
QUERIES_PER_MINUTE = 10
PRESENTMENT_SECONDS = 1800


class Refusal(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def bad(detail: str) -> Refusal:
    return Refusal(400, "BadRequest", detail)


@dataclass
class Bill:
    bill_id: str
    period: str
    amount: int
    late_fee: int
    due_date: str
    paid_by: str | None = None


@dataclass
class Account:
    holder: str
    bills: list[Bill]


@dataclass
class Payment:
    serial: str
    body_hash: str
    reference: str
    bill_key: str
    amount: int
    sub_channel: str
    date: str
    state: str  # success | failure | pending | reversed | refunded
    bill: Bill | None = None
    receipt_no: str | None = None
    reason: str | None = None
    was: str | None = None


@dataclass
class Refund:
    refund_serial: str
    original: str
    amount: int
    bill_key: str
    date: str
    receipt_no: str | None
    result: str


@dataclass
class Behaviour:
    mode: str
    delay_ms: int = 0
    repeat: int = 2
    times: int | None = None  # None: until changed


@dataclass
class BillerState:
    id: str
    key: bytes
    accounts: dict[str, Account]
    partial_allowed: bool = False
    latency_ms: int = 0
    presentments: dict[str, tuple[str, Bill, int, float]] = field(default_factory=dict)
    payments: dict[str, Payment] = field(default_factory=dict)
    refunds: dict[str, Refund] = field(default_factory=dict)
    answers: dict[str, tuple[str, int, bytes]] = field(default_factory=dict)
    queries: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))


def presentment_reference(biller_id: str, bill_id: str, n: int) -> str:
    """A presentment's reference, unique in this process: its parts are hashed with a separator
    between them, since bill ids and the counter both end in digits ("B-1" then 23 and "B-12"
    then 3 would otherwise hash the same text)."""
    return "P-" + hashlib.sha256(f"{biller_id}|{bill_id}|{n}".encode()).hexdigest()[:12]


def _mask(name: str) -> str:
    return (name[:1] + "*" * (len(name) - 1))[:32] if name else ""


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def signed_string(first: str, path: str, stamp: str, key: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join(("BILL1", first, path, stamp, key, digest)).encode()


def _int(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if type(value) is not int or not low <= value <= high:
        raise bad(f"{name} must be an integer in {low}..{high}")
    return value


def _str(body: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not pattern.match(value):
        raise bad(f"{name} missing or malformed")
    return value


def _fields(
    body: dict[str, Any], required: set[str], optional: frozenset[str] = frozenset()
) -> None:
    missing = required - body.keys()
    unknown = body.keys() - required - optional
    if missing or unknown:
        raise bad(f"missing {sorted(missing)} unknown {sorted(unknown)}")


class BillerSim:
    def __init__(self, data: dict[str, Any], *, max_skew: float = 300.0) -> None:
        self.channel = str(data.get("channel", "CITYCARD"))
        self.callback_url = str(data.get("callback_url", "")).rstrip("/")
        self.max_skew = max_skew
        self.billers: dict[str, BillerState] = {}
        self._data = data
        self.behaviours: dict[tuple[str, str | None], Behaviour] = {}
        self.stats: dict[str, int] = defaultdict(int)
        self.callbacks: list[dict[str, Any]] = []
        self._receipts = itertools.count(1)
        self._callback_no = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self.load()

    def load(self) -> None:
        self.billers = {}
        for item in self._data.get("billers", []):
            accounts = {
                a["bill_key"]: Account(a.get("holder", ""), [Bill(**b) for b in a.get("bills", [])])
                for a in item.get("accounts", [])
            }
            self.billers[item["id"]] = BillerState(
                item["id"],
                bytes.fromhex(item["key"]),
                accounts,
                bool(item.get("partial_allowed", False)),
                int(item.get("latency_ms", 0)),
            )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.aclose()

    # --- behaviour -------------------------------------------------------------------------

    def behaviour(
        self, biller: str, bill_key: str | None, kinds: tuple[str, ...]
    ) -> Behaviour | None:
        """The behaviour that applies to this request (bill key first, then the biller), used
        up by one when it was given a number of times."""
        for scope in ((biller, bill_key), (biller, None)) if bill_key else ((biller, None),):
            found = self.behaviours.get(scope)
            if found is None or found.mode not in kinds:
                continue
            if found.times is not None:
                found.times -= 1
                if found.times <= 0:
                    del self.behaviours[scope]
            return found
        return None

    def set_behaviour(self, body: dict[str, Any]) -> dict[str, Any]:
        biller, mode = body.get("biller"), body.get("mode")
        if biller not in self.billers or mode not in MODES:
            raise bad(f"biller must be one of {sorted(self.billers)}, mode one of {MODES}")
        scope = (str(biller), body.get("bill_key"))
        if mode == "normal":
            self.behaviours.pop(scope, None)
        else:
            self.behaviours[scope] = Behaviour(
                str(mode),
                int(body.get("delay_ms", 0)),
                int(body.get("repeat", 2)),
                None if body.get("times") is None else int(body["times"]),
            )
        return {"ok": True}

    # --- the HTTP entry ---------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        if request.path.startswith("/sim/"):
            return await self._control(request)
        self.stats["requests"] += 1
        biller_id = request.headers.get("x-bill-biller", "")
        state = self.billers.get(biller_id)
        key = request.headers.get("idempotency-key", "")
        try:
            if request.method != "POST" or request.path not in ROUTES:
                raise Refusal(404, "NotFound", "no such route")
            if state is None:
                raise Refusal(401, "SignatureInvalid", "unknown biller")
            everything = self.behaviour(biller_id, None, ("down", "error"))
            if everything is not None and everything.mode == "down":
                return Response(
                    503, _json({"error": "Unavailable", "detail": "down"}), {"Retry-After": "1"}
                )
            if everything is not None:
                return Response(500, b'{"error":"InternalError","detail":"simulated"}')
            self._check_signature(state, request)
            if state.latency_ms:
                await asyncio.sleep(state.latency_ms / 1000)
            try:
                body = json.loads(request.body)
            except ValueError:
                raise bad("not JSON") from None
            if not isinstance(body, dict):
                raise bad("the body must be an object")
            digest = hashlib.sha256(request.body).hexdigest()
            seen = state.answers.get(key)
            if seen is not None and request.path != "/bills/query":
                if seen[0] != digest:
                    raise Refusal(409, "IdempotencyConflict", "the key was used for another body")
                status, answer, mode = seen[1], seen[2], None
            else:
                status, answer_value, mode = await ROUTES[request.path](self, state, body)
                answer = _json(answer_value)
                if request.path != "/bills/query":
                    state.answers[key] = (digest, status, answer)
        except Refusal as refusal:
            status, answer, mode = (
                refusal.status,
                _json({"error": refusal.error, "detail": refusal.detail}),
                None,
            )
            if refusal.status == 401 or state is None:
                return Response(status, answer)
        self.stats[f"answer:{request.path}:{status}"] += 1
        return await self._answer(state, request, status, answer, key, mode)

    async def _answer(
        self,
        state: BillerState,
        request: Request,
        status: int,
        body: bytes,
        key: str,
        mode: Behaviour | None,
    ) -> Response:
        stamp = datetime.now(UTC).strftime(STAMP)
        signing_key = (
            b"\x00" * 32 if mode is not None and mode.mode == "bad_signature" else state.key
        )
        signature = hmac.new(
            signing_key, signed_string(str(status), request.path, stamp, key, body), hashlib.sha256
        ).hexdigest()
        headers = {
            "X-Bill-Channel": self.channel,
            "X-Bill-Biller": state.id,
            "X-Bill-Timestamp": stamp,
            "Idempotency-Key": key,
            "X-Bill-Signature": signature,
        }
        if mode is not None and mode.mode == "lost":
            return Response(status, drop=True)
        if mode is not None and mode.mode == "slow":
            await asyncio.sleep(mode.delay_ms / 1000)
        return Response(status, body, headers)

    def _check_signature(self, state: BillerState, request: Request) -> None:
        h = request.headers
        stamp, key, signature = (
            h.get("x-bill-timestamp", ""),
            h.get("idempotency-key", ""),
            h.get("x-bill-signature", ""),
        )
        if h.get("x-bill-channel") != self.channel or not KEY.match(key):
            raise Refusal(401, "SignatureInvalid", "channel or idempotency key missing or wrong")
        try:
            moment = datetime.strptime(stamp, STAMP).replace(tzinfo=UTC)
        except ValueError:
            raise Refusal(401, "SignatureInvalid", "timestamp missing or malformed") from None
        if abs((moment - datetime.now(UTC)).total_seconds()) > self.max_skew:
            raise Refusal(401, "SignatureInvalid", "stale timestamp")
        expected = hmac.new(
            state.key, signed_string("POST", request.path, stamp, key, request.body), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise Refusal(401, "SignatureInvalid", "the signature does not verify")

    # --- the protocol -----------------------------------------------------------------------

    async def query(self, state: BillerState, body: dict[str, Any]) -> tuple[int, Any, None]:
        _fields(body, {"bill_key"}, frozenset({"period"}))
        bill_key = _str(body, "bill_key", re.compile(r"^[0-9A-Za-z]{1,32}$"))
        now = time.monotonic()
        recent = state.queries[bill_key]
        while recent and now - recent[0] > 60:
            recent.popleft()
        if len(recent) >= QUERIES_PER_MINUTE:
            raise Refusal(429, "TooManyQueries", "at most 10 queries a minute per bill key")
        recent.append(now)
        account = state.accounts.get(bill_key)
        if account is None:
            return 200, {"result": "no_such_customer"}, None
        period = body.get("period")
        unpaid = [b for b in account.bills if b.paid_by is None and period in (None, b.period)]
        if not unpaid:
            return 200, {"result": "nothing_due"}, None
        bill = unpaid[0]
        reference = presentment_reference(state.id, bill.bill_id, next(self._receipts))
        due = bill.amount + bill.late_fee
        minimum = 1 if state.partial_allowed else due
        state.presentments[reference] = (bill_key, bill, due, time.time() + PRESENTMENT_SECONDS)
        expires = datetime.now(UTC) + timedelta(seconds=PRESENTMENT_SECONDS)
        return (
            200,
            {
                "result": "presented",
                "presentment": {
                    "reference": reference,
                    "bill_id": bill.bill_id,
                    "holder_masked": _mask(account.holder),
                    "amount_due": due,
                    "late_fee": bill.late_fee,
                    "period": bill.period,
                    "due_date": bill.due_date,
                    "partial_allowed": state.partial_allowed,
                    "min_amount": minimum,
                    "expires_at": expires.strftime(STAMP),
                },
            },
            None,
        )

    def _receipt(self) -> str:
        return f"R{next(self._receipts):010d}"

    async def pay(
        self, state: BillerState, body: dict[str, Any]
    ) -> tuple[int, Any, Behaviour | None]:
        _fields(
            body, {"serial", "reference", "bill_key", "amount", "sub_channel", "paid_at", "date"}
        )
        serial = _str(body, "serial", SERIAL)
        reference = _str(body, "reference", REFERENCE)
        bill_key = _str(body, "bill_key", re.compile(r"^[0-9A-Za-z]{1,32}$"))
        amount = _int(body, "amount", 1, 10**10)
        sub_channel = body.get("sub_channel")
        if sub_channel not in SUB_CHANNELS:
            raise bad("sub_channel must be online, kiosk or counter")
        date = _str(body, "date", re.compile(r"^\d{4}-\d{2}-\d{2}$"))
        _str(body, "paid_at", re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"))
        digest = hashlib.sha256(
            _json({k: body[k] for k in sorted(body) if k != "paid_at"})
        ).hexdigest()
        existing = state.payments.get(serial)
        if existing is not None:
            if existing.state == "reversed" and existing.was == "unknown_serial":
                return (
                    200,
                    {
                        "result": "failure",
                        "serial": serial,
                        "reason": "serial_reversed",
                        "detail": "a reversal of this serial came first",
                    },
                    None,
                )
            if existing.body_hash != digest:
                raise Refusal(409, "IdempotencyConflict", "the serial was used for another payment")
            return 200, self._state_answer(existing), None
        mode = self.behaviour(state.id, bill_key, PAYMENT_MODES)
        payment = Payment(
            serial, digest, reference, bill_key, amount, str(sub_channel), date, "failure"
        )
        state.payments[serial] = payment
        found = state.presentments.get(reference)
        if mode is not None and mode.mode == "refuse":
            payment.reason = "refused"
        elif found is None:
            payment.reason = "reference_unknown"
        elif found[3] < time.time():
            payment.reason = "reference_expired"
        elif found[0] != bill_key:
            payment.reason = "bill_key_mismatch"
        elif found[1].paid_by is not None:
            payment.reason = "already_paid"
        elif not ((1 if state.partial_allowed else found[2]) <= amount <= found[2]):
            payment.reason = "amount_mismatch"
        else:
            payment.bill = found[1]
            found[1].paid_by = serial
            if mode is not None and mode.mode in ("pending", "duplicate_callbacks"):
                payment.state = "pending"
                self._later(self._decide(state, payment, mode))
            else:
                payment.state, payment.receipt_no = "success", self._receipt()
        return 200, self._state_answer(payment), mode

    @staticmethod
    def _state_answer(payment: Payment) -> dict[str, Any]:
        answer: dict[str, Any] = {"result": payment.state, "serial": payment.serial}
        if payment.receipt_no is not None:
            answer["receipt_no"] = payment.receipt_no
        if payment.state == "failure":
            answer["reason"] = payment.reason
        if payment.was is not None:
            answer["was"] = payment.was
        return answer

    async def status(self, state: BillerState, body: dict[str, Any]) -> tuple[int, Any, None]:
        _fields(body, {"serial"})
        serial = _str(body, "serial", SERIAL)
        payment = state.payments.get(serial)
        if payment is None:
            return 200, {"result": "unknown_serial", "serial": serial}, None
        answer = self._state_answer(payment)
        answer.pop("was", None)
        return 200, answer, None

    async def reverse(self, state: BillerState, body: dict[str, Any]) -> tuple[int, Any, None]:
        _fields(body, {"serial", "bill_key", "amount", "reason"})
        serial = _str(body, "serial", SERIAL)
        _int(body, "amount", 1, 10**10)
        payment = state.payments.get(serial)
        if (payment is None or payment.state != "reversed") and self.behaviour(
            state.id, str(body.get("bill_key")), REVERSAL_MODES
        ) is not None:
            # The biller's day of the payment is closed: it refuses, and the payment stands.
            return 200, {"result": "refused", "serial": serial, "reason": "after_cut"}, None
        if payment is None:
            payment = Payment(
                serial,
                "",
                "",
                str(body.get("bill_key")),
                int(body["amount"]),
                "",
                "",
                "reversed",
                was="unknown_serial",
            )
            state.payments[serial] = payment
        elif payment.state != "reversed":
            payment.was = "success" if payment.state in ("success", "pending") else "failure"
            if payment.bill is not None and payment.bill.paid_by == serial:
                payment.bill.paid_by = None
            payment.state = "reversed"
        return 200, {"result": "reversed", "serial": serial, "was": payment.was}, None

    async def refund(self, state: BillerState, body: dict[str, Any]) -> tuple[int, Any, None]:
        _fields(body, {"refund_serial", "original_serial", "bill_key", "amount", "date"})
        refund_serial = _str(body, "refund_serial", SERIAL)
        original = _str(body, "original_serial", SERIAL)
        amount = _int(body, "amount", 1, 10**10)
        date = _str(body, "date", re.compile(r"^\d{4}-\d{2}-\d{2}$"))
        done = state.refunds.get(refund_serial)
        if done is None:
            payment = state.payments.get(original)
            if payment is not None and payment.state == "success" and payment.amount == amount:
                if payment.bill is not None and payment.bill.paid_by == original:
                    payment.bill.paid_by = None
                payment.state = "refunded"
                done = Refund(
                    refund_serial,
                    original,
                    amount,
                    payment.bill_key,
                    date,
                    self._receipt(),
                    "refunded",
                )
            else:
                if payment is None:
                    state.payments[original] = Payment(
                        original,
                        "",
                        "",
                        str(body["bill_key"]),
                        amount,
                        "",
                        "",
                        "reversed",
                        was="unknown_serial",
                    )
                done = Refund(
                    refund_serial, original, amount, str(body["bill_key"]), date, None, "not_paid"
                )
            state.refunds[refund_serial] = done
        answer: dict[str, Any] = {"result": done.result}
        if done.receipt_no:
            answer["receipt_no"] = done.receipt_no
        return 200, answer, None

    async def reconcile(self, state: BillerState, body: dict[str, Any]) -> tuple[int, Any, None]:
        _fields(body, {"date", "file_name", "count", "sum", "sha256", "file"})
        date = _str(body, "date", re.compile(r"^\d{4}-\d{2}-\d{2}$"))
        text = body.get("file")
        if not isinstance(text, str):
            raise bad("file must be a string")
        raw = text.encode()
        if hashlib.sha256(raw).hexdigest() != body.get("sha256"):
            raise bad("sha256 does not match the file")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines:
            raise bad("no totals line")
        try:
            count, total = (int(x) for x in lines[0].split("|"))
        except ValueError:
            raise bad("the totals line must be count|sum") from None
        details = [line.split("|") for line in lines[1:]]
        signed = sum(int(d[3]) * (1 if d[5] == "payment" else -1) for d in details if len(d) == 7)
        if (
            count != len(details)
            or total != signed
            or (count, total) != (body["count"], body["sum"])
        ):
            raise bad("the totals do not match the detail lines")
        mode = self.behaviour(state.id, None, RECON_MODES)
        ours: dict[str, tuple[int, str]] = {}
        for p in state.payments.values():
            if p.date == date and p.state in ("success", "refunded"):
                ours[p.serial] = (p.amount, "success")
        for r in state.refunds.values():
            if r.date == date and r.result == "refunded":
                ours[r.refund_serial] = (r.amount, "success")
        if mode is not None and mode.mode == "recon_extra":
            ours["SIMEXTRA1"] = (100, "success")
        items: list[dict[str, Any]] = []
        for n, d in enumerate(details):
            if len(d) != 7:
                raise bad(f"line {n + 2} must have 7 fields")
            serial, amount = d[1], int(d[3])
            if mode is not None and n == 0 and mode.mode == "recon_missing":
                ours.pop(serial, None)
            if mode is not None and n == 0 and mode.mode == "recon_amount" and serial in ours:
                ours[serial] = (ours[serial][0] + 100, "success")
            mine = ours.pop(serial, None)
            if mine is None:
                other = state.payments.get(serial)
                if other is not None and other.state not in ("success", "refunded"):
                    items.append(
                        {"serial": serial, "kind": "status_differs", "biller_status": other.state}
                    )
                else:
                    items.append(
                        {"serial": serial, "kind": "only_channel", "channel_amount": amount}
                    )
            elif mine[0] != amount:
                items.append(
                    {
                        "serial": serial,
                        "kind": "amount_differs",
                        "channel_amount": amount,
                        "biller_amount": mine[0],
                    }
                )
        for serial, (amount, _status) in sorted(ours.items()):
            payment = state.payments.get(serial)
            items.append(
                {
                    "serial": serial,
                    "kind": "only_biller",
                    "biller_amount": amount,
                    "bill_key": payment.bill_key if payment else "",
                }
            )
        if not items:
            return 200, {"result": "agree", "date": date}, None
        return 200, {"result": "disagree", "date": date, "items": items[:10_000]}, None

    # --- pending decisions and callbacks ---------------------------------------------------

    def _later(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _decide(self, state: BillerState, payment: Payment, mode: Behaviour) -> None:
        await asyncio.sleep(mode.delay_ms / 1000)
        if payment.state != "pending":
            return
        payment.state, payment.receipt_no = "success", self._receipt()
        copies = mode.repeat if mode.mode == "duplicate_callbacks" else 1
        for _ in range(max(1, copies)):
            await self._callback(state, payment)

    async def _callback(self, state: BillerState, payment: Payment) -> None:
        if not self.callback_url:
            return
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5.0)
        body = _json(
            {
                "serial": payment.serial,
                "result": payment.state,
                **({"receipt_no": payment.receipt_no} if payment.receipt_no else {}),
            }
        )
        key = f"callback:{payment.serial}:{next(self._callback_no)}"
        path_url = f"{self.callback_url}/{state.id}"
        path = httpx.URL(path_url).path
        for attempt in range(8):
            stamp = datetime.now(UTC).strftime(STAMP)
            signature = hmac.new(
                state.key, signed_string("POST", path, stamp, key, body), hashlib.sha256
            ).hexdigest()
            headers = {
                "Content-Type": "application/json",
                "X-Bill-Channel": self.channel,
                "X-Bill-Biller": state.id,
                "X-Bill-Timestamp": stamp,
                "Idempotency-Key": key,
                "X-Bill-Signature": signature,
            }
            status = None
            with contextlib.suppress(httpx.HTTPError):
                status = (
                    await self._http.post(path_url, content=body, headers=headers)
                ).status_code
            self.callbacks.append({"serial": payment.serial, "key": key, "status": status})
            if status is not None and status < 500:
                return
            await asyncio.sleep(min(0.2 * 2**attempt, 5.0))

    # --- control ---------------------------------------------------------------------------

    async def _control(self, request: Request) -> Response:
        if request.peer not in ("127.0.0.1", "::1"):
            return Response(404, b'{"error":"NotFound","detail":"no such route"}')
        if request.path == "/sim/behaviour" and request.method == "POST":
            try:
                return Response(200, _json(self.set_behaviour(json.loads(request.body or b"{}"))))
            except (Refusal, ValueError, TypeError) as exc:
                return Response(400, _json({"error": "BadRequest", "detail": str(exc)}))
        if request.path == "/sim/state" and request.method == "GET":
            return Response(200, _json(self.snapshot()))
        if request.path == "/sim/stats" and request.method == "GET":
            return Response(200, _json(dict(self.stats)))
        if request.path == "/sim/reset" and request.method == "POST":
            self.behaviours.clear()
            self.callbacks.clear()
            self.stats.clear()
            self.load()
            return Response(200, b'{"ok":true}')
        return Response(404, b'{"error":"NotFound","detail":"no such route"}')

    def snapshot(self) -> dict[str, Any]:
        return {
            "billers": {
                b.id: {
                    "payments": {
                        s: {
                            "state": p.state,
                            "amount": p.amount,
                            "bill_key": p.bill_key,
                            "receipt_no": p.receipt_no,
                            "reason": p.reason,
                            "was": p.was,
                            "date": p.date,
                        }
                        for s, p in b.payments.items()
                    },
                    "refunds": {
                        s: {"result": r.result, "original": r.original}
                        for s, r in b.refunds.items()
                    },
                }
                for b in self.billers.values()
            },
            "callbacks": self.callbacks,
        }


ROUTES = {
    "/bills/query": BillerSim.query,
    "/bills/payments": BillerSim.pay,
    "/bills/status": BillerSim.status,
    "/bills/reversals": BillerSim.reverse,
    "/bills/refunds": BillerSim.refund,
    "/bills/reconciliation": BillerSim.reconcile,
}
