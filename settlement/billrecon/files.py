"""The reconciliation file of docs/biller-protocol.md §8: build it from the day's lines, and
read one back (the file is checked against its own totals before it is sent).

UTF-8 text, every line ended by LF. The first line is the totals, ``count|sum``; every other line
is one movement: ``date|serial|bill key|amount|sub-channel|type|receipt number``, amounts in
integer fen (positive), ``sum`` the payments minus the refunds.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date

MAX_LINES = 200_000
MAX_AMOUNT = 10**10
SUB_CHANNELS = ("online", "kiosk", "counter")
TYPES = ("payment", "refund")
SERIAL = re.compile(r"^[0-9A-Za-z]{1,32}$")
BILL_KEY = re.compile(r"^[0-9A-Za-z]{1,32}$")
RECEIPT = re.compile(r"^[0-9A-Za-z._-]{0,64}$")  # empty: the biller gave none
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
AMOUNT = re.compile(r"^[1-9][0-9]{0,10}$")
TOTALS = re.compile(r"^(0|[1-9][0-9]{0,9})\|(0|-?[1-9][0-9]{0,16})$")


class FileInvalid(ValueError):
    """A file (or a line for one) that is not of §8."""


@dataclass(frozen=True, slots=True)
class Line:
    day: date
    serial: str  # the payment's serial, or the refund serial
    bill_key: str
    amount: int  # fen, > 0
    sub_channel: str
    type: str  # payment | refund
    receipt_no: str

    @property
    def signed(self) -> int:
        return self.amount if self.type == "payment" else -self.amount


@dataclass(frozen=True, slots=True)
class File:
    count: int
    total: int
    lines: tuple[Line, ...]

    @property
    def text(self) -> str:
        return render(self.lines)

    @property
    def data(self) -> bytes:
        return self.text.encode("utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def file_name(channel: str, biller_code: str, day: date) -> str:
    return f"{channel}_{biller_code}_{day:%Y%m%d}.txt"


def _check(line: Line) -> None:
    if not SERIAL.match(line.serial):
        raise FileInvalid(f"serial {line.serial!r} is not 1-32 letters or digits")
    if not BILL_KEY.match(line.bill_key):
        raise FileInvalid(f"bill key {line.bill_key!r} is not 1-32 letters or digits")
    if type(line.amount) is not int or not 1 <= line.amount <= MAX_AMOUNT:
        raise FileInvalid(f"amount {line.amount!r} is not 1 to {MAX_AMOUNT} fen")
    if line.sub_channel not in SUB_CHANNELS:
        raise FileInvalid(f"sub-channel {line.sub_channel!r} is not one of {SUB_CHANNELS}")
    if line.type not in TYPES:
        raise FileInvalid(f"type {line.type!r} is not one of {TYPES}")
    if not RECEIPT.match(line.receipt_no):
        raise FileInvalid(f"receipt number {line.receipt_no!r} is not of the protocol")


def build(lines: list[Line]) -> File:
    """The file of these lines, in the order given; refuses a line that is not of §8."""
    if len(lines) > MAX_LINES:
        raise FileInvalid(f"{len(lines)} lines: at most {MAX_LINES}")
    for line in lines:
        _check(line)
    return File(len(lines), sum(line.signed for line in lines), tuple(lines))


def render(lines: tuple[Line, ...] | list[Line]) -> str:
    out = [f"{len(lines)}|{sum(line.signed for line in lines)}\n"]
    out += [
        f"{ln.day.isoformat()}|{ln.serial}|{ln.bill_key}|{ln.amount}|{ln.sub_channel}|{ln.type}|"
        f"{ln.receipt_no}\n"
        for ln in lines
    ]
    return "".join(out)


def parse(data: bytes) -> File:
    """Read a file back: every line of §8, the totals those of the lines (FileInvalid)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileInvalid("not UTF-8") from exc
    if not text.endswith("\n"):
        raise FileInvalid("the last line is not ended by LF")
    rows = text[:-1].split("\n")
    totals = TOTALS.match(rows[0])
    if totals is None:
        raise FileInvalid("the first line is not count|sum")
    count, total = int(totals.group(1)), int(totals.group(2))
    if len(rows) - 1 > MAX_LINES:
        raise FileInvalid(f"more than {MAX_LINES} lines")
    lines = []
    for n, row in enumerate(rows[1:], start=2):
        fields = row.split("|")
        if len(fields) != 7:
            raise FileInvalid(f"line {n}: {len(fields)} fields, not 7")
        day, serial, bill_key, amount, sub_channel, kind, receipt = fields
        if not DATE.match(day) or not AMOUNT.match(amount):
            raise FileInvalid(f"line {n}: the date or the amount is malformed")
        try:
            moment = date.fromisoformat(day)
        except ValueError as exc:
            raise FileInvalid(f"line {n}: {day} is not a date") from exc
        line = Line(moment, serial, bill_key, int(amount), sub_channel, kind, receipt)
        try:
            _check(line)
        except FileInvalid as exc:
            raise FileInvalid(f"line {n}: {exc}") from None
        lines.append(line)
    if count != len(lines) or total != sum(line.signed for line in lines):
        raise FileInvalid("the totals line is not the count and sum of the lines")
    return File(count, total, tuple(lines))
