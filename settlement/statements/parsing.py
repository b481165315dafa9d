"""What a bank statement file says, whatever its format (docs/bank-statements.md): the values
both parsers produce, their limits, and the one error they raise.

A parser either returns a whole :class:`ParsedStatement` or raises :class:`StatementMalformed`
naming the line (or element) and the field; it never raises anything else, whatever the bytes
(the property tests feed it garbage). Amounts become integer fen from their digits, never
through a float.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Final

from cardsvc.errors import ValidationFailed

MAX_BYTES: Final = 2 * 1024 * 1024  # a statement file, before it is parsed
MAX_LINES: Final = 20_000  # lines (entries) of one statement
MAX_AMOUNT: Final = 10**12  # fen of one line (ten billion yuan)
MAX_BALANCE: Final = 10**14  # fen of a balance (what twelve digits of yuan hold)
CURRENCY: Final = "CNY"
STATEMENT_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/\-?:().,'+ ]{0,34}$")
ACCOUNT: Final = re.compile(r"^[A-Za-z0-9]{1,34}$")
# References the bank carries back: our payout references and its own.
REFERENCE: Final = re.compile(r"^[A-Za-z0-9/\-?:().,'+_]{1,64}$")
TEXT_MAX: Final = 140


class Format(StrEnum):
    csv = "csv"
    camt053 = "camt053"


class Direction(StrEnum):
    credit = "credit"  # money into the account
    debit = "debit"  # money out of it (a payout)


class StatementMalformed(ValidationFailed):
    """The file is not a statement this host reads; nothing of it was stored. ``code`` says what
    is wrong, ``line`` and ``field`` where (docs/bank-statements.md, "Errors")."""

    def __init__(
        self, code: str, detail: str, *, line: int | None = None, field: str | None = None
    ):
        where = []
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field}")
        prefix = f"{code}" + (f" at {', '.join(where)}" if where else "")
        super().__init__(f"{prefix}: {detail}", code=code, line=line, field=field)
        self.code = code
        self.line = line
        self.field = field


@dataclass(frozen=True, slots=True)
class ParsedLine:
    line_no: int  # 1-based position of the line (entry) in the statement
    booking_date: date
    value_date: date | None
    direction: Direction
    amount: int  # fen, > 0
    reference: str | None  # the payer's end-to-end reference: for a payout, ours
    bank_reference: str | None  # the bank's own reference of the entry
    counterparty_account: str | None
    counterparty_name: str | None
    remittance: str | None


@dataclass(frozen=True, slots=True)
class ParsedStatement:
    format: Format
    statement_id: str
    account: str
    currency: str
    opening_balance: int | None  # fen, signed (negative: overdrawn)
    closing_balance: int | None
    lines: list[ParsedLine] = field(default_factory=list)


_AMOUNT = re.compile(r"^(0|[1-9]\d{0,11})(?:\.(\d{1,2}))?$")


def decimal_fen(text: str, *, line: int | None, name: str, most: int = MAX_AMOUNT) -> int:
    """``1234.5`` → ``123450``: the digits of a decimal amount (at most two decimals) as fen."""
    found = _AMOUNT.match(text)
    if not found:
        raise StatementMalformed(
            "amount", f"{text[:40]!r} is not an amount (digits, at most 2 decimals)",
            line=line, field=name,
        )  # fmt: skip
    whole, cents = found.group(1), found.group(2) or "0"
    fen = int(whole) * 100 + int(cents.ljust(2, "0"))
    if fen > most:
        raise StatementMalformed("amount", "above the limit", line=line, field=name)
    return fen


def fen_decimal(fen: int) -> str:
    """The inverse of :func:`decimal_fen` (two decimals): what a writer puts in a file."""
    whole, cents = divmod(fen, 100)
    return f"{whole}.{cents:02d}"


def iso_date(text: str, *, line: int | None, name: str) -> date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise StatementMalformed("date", f"{text[:40]!r} is not YYYY-MM-DD", line=line, field=name)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise StatementMalformed("date", f"{text!r} is not a date", line=line, field=name) from None


_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def text_value(
    text: str | None, *, line: int | None, name: str, pattern: re.Pattern[str] | None = None,
    max_length: int = TEXT_MAX, required: bool = False,
) -> str | None:  # fmt: skip
    """A text field: None when empty (unless required); bounded, no control character, and
    matching ``pattern`` when given."""
    if text is None or text == "":
        if required:
            raise StatementMalformed("missing", "is required", line=line, field=name)
        return None
    if len(text) > max_length or _control(text) or text != text.strip():
        raise StatementMalformed(
            "field", f"at most {max_length} characters, no control character or outer space",
            line=line, field=name,
        )  # fmt: skip
    if pattern is not None and not pattern.match(text):
        raise StatementMalformed(
            "field", f"{text[:40]!r} is not allowed here", line=line, field=name
        )
    return text


def required_text(
    text: str | None, *, line: int | None, name: str, pattern: re.Pattern[str] | None = None,
    max_length: int = TEXT_MAX,
) -> str:  # fmt: skip
    found = text_value(
        text, line=line, name=name, pattern=pattern, max_length=max_length, required=True
    )
    if found is None:  # text_value refused it already
        raise StatementMalformed("missing", "is required", line=line, field=name)
    return found


def check_statement(statement: ParsedStatement) -> ParsedStatement:
    """Rules both formats share: the currency, how many lines, and that the balances (when the
    file gives both) agree with the lines."""
    if statement.currency != CURRENCY:
        raise StatementMalformed("currency", f"only {CURRENCY} is read", field="currency")
    if len(statement.lines) > MAX_LINES:
        raise StatementMalformed("too_many_lines", f"at most {MAX_LINES} lines")
    if statement.opening_balance is not None and statement.closing_balance is not None:
        moved = sum(
            line.amount if line.direction is Direction.credit else -line.amount
            for line in statement.lines
        )
        if statement.opening_balance + moved != statement.closing_balance:
            raise StatementMalformed(
                "balances",
                f"opening {statement.opening_balance} fen and the lines ({moved} fen) do not "
                f"make the closing {statement.closing_balance} fen",
                field="closing_balance",
            )
    return statement


def sniff(data: bytes) -> Format:
    """XML begins with ``<`` (after a byte order mark and white space); anything else is CSV."""
    head = data[:64].lstrip(b"\xef\xbb\xbf").lstrip()
    return Format.camt053 if head.startswith(b"<") else Format.csv


def parse(data: bytes, format: Format | None = None) -> ParsedStatement:
    """Parse a statement file of at most :data:`MAX_BYTES` (checked first, before any parsing)."""
    from settlement.statements import camt053, csv_layout

    if len(data) > MAX_BYTES:
        raise StatementMalformed("too_large", f"a statement file is at most {MAX_BYTES} bytes")
    if not data.strip():
        raise StatementMalformed("empty", "the file is empty")
    chosen = format or sniff(data)
    parsed = camt053.parse(data) if chosen is Format.camt053 else csv_layout.parse(data)
    return check_statement(parsed)
