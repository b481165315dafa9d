"""The bank statement as CSV (docs/bank-statements.md, "CSV layout"): UTF-8 (a byte order mark
is allowed), one header line naming the columns below in this order, then one line per entry in
the bank's order; RFC 4180 quoting; lines end with CRLF or LF. Amounts are integer fen."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Final

from settlement.statements.parsing import (
    ACCOUNT,
    MAX_AMOUNT,
    MAX_LINES,
    REFERENCE,
    STATEMENT_ID,
    Direction,
    Format,
    ParsedLine,
    ParsedStatement,
    StatementMalformed,
    iso_date,
    required_text,
    text_value,
)

COLUMNS: Final = (
    "statement_id", "account", "currency", "booking_date", "value_date", "direction", "amount",
    "reference", "bank_reference", "counterparty_account", "counterparty_name", "remittance",
)  # fmt: skip
_DIRECTIONS: Final = {"credit": Direction.credit, "debit": Direction.debit}


def _fen(text: str, line: int) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 13 or text.startswith("0"):
        raise StatementMalformed(
            "amount",
            f"{text[:40]!r} is not a whole number of fen from 1",
            line=line,
            field="amount",
        )
    value = int(text)
    if value > MAX_AMOUNT:
        raise StatementMalformed("amount", "above the limit", line=line, field="amount")
    return value


def parse(data: bytes) -> ParsedStatement:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise StatementMalformed("encoding", "not UTF-8", line=line) from None
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise StatementMalformed("csv", str(exc), line=reader.line_num) from None
    rows = [(n, row) for n, row in rows if row]
    if not rows:
        raise StatementMalformed("empty", "the file is empty")
    header_line, header = rows[0]
    if tuple(header) != COLUMNS:
        raise StatementMalformed(
            "header", f"the header must be: {','.join(COLUMNS)}", line=header_line
        )
    if len(rows) == 1:
        raise StatementMalformed("empty", "a statement of no line", line=header_line)
    if len(rows) - 1 > MAX_LINES:
        raise StatementMalformed("too_many_lines", f"at most {MAX_LINES} lines")
    first: tuple[str, str, str] | None = None
    lines = []
    for position, (n, row) in enumerate(rows[1:], start=1):
        if len(row) != len(COLUMNS):
            raise StatementMalformed(
                "columns", f"{len(row)} cells where {len(COLUMNS)} are expected", line=n
            )
        cells = dict(zip(COLUMNS, row, strict=True))
        statement_id = required_text(
            cells["statement_id"], line=n, name="statement_id", pattern=STATEMENT_ID,
            max_length=35,
        )  # fmt: skip
        account = required_text(
            cells["account"], line=n, name="account", pattern=ACCOUNT, max_length=34
        )
        currency = cells["currency"]
        if first is None:
            first = (statement_id, account, currency)
        elif (statement_id, account, currency) != first:
            raise StatementMalformed(
                "inconsistent",
                "every line names the same statement_id, account and currency",
                line=n,
                field="statement_id",
            )
        direction = _DIRECTIONS.get(cells["direction"])
        if direction is None:
            raise StatementMalformed(
                "field", "direction is credit or debit", line=n, field="direction"
            )
        lines.append(
            ParsedLine(
                line_no=position,
                booking_date=iso_date(cells["booking_date"], line=n, name="booking_date"),
                value_date=(
                    iso_date(cells["value_date"], line=n, name="value_date")
                    if cells["value_date"]
                    else None
                ),
                direction=direction,
                amount=_fen(cells["amount"], n),
                reference=text_value(
                    cells["reference"], line=n, name="reference", pattern=REFERENCE, max_length=64
                ),
                bank_reference=text_value(
                    cells["bank_reference"],
                    line=n,
                    name="bank_reference",
                    pattern=REFERENCE,
                    max_length=64,
                ),
                counterparty_account=text_value(
                    cells["counterparty_account"],
                    line=n,
                    name="counterparty_account",
                    pattern=ACCOUNT,
                    max_length=34,
                ),
                counterparty_name=text_value(
                    cells["counterparty_name"], line=n, name="counterparty_name"
                ),
                remittance=text_value(cells["remittance"], line=n, name="remittance"),
            )
        )
    statement_id, account, currency = first or ("", "", "")
    return ParsedStatement(Format.csv, statement_id, account, currency, None, None, lines)


def write(statement: ParsedStatement) -> bytes:
    """The statement in this layout (what a test or a bank simulator sends)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for line in statement.lines:
        writer.writerow(_cells(statement, line))
    return out.getvalue().encode("utf-8")


def _cells(statement: ParsedStatement, line: ParsedLine) -> Iterable[str]:
    return (
        statement.statement_id,
        statement.account,
        statement.currency,
        line.booking_date.isoformat(),
        line.value_date.isoformat() if line.value_date else "",
        line.direction.value,
        str(line.amount),
        line.reference or "",
        line.bank_reference or "",
        line.counterparty_account or "",
        line.counterparty_name or "",
        line.remittance or "",
    )
