"""Plain formatting of the finance pages: yuan from integer fen, and CSV cells safe to open in a
spreadsheet."""

from __future__ import annotations

import re

# A cell a spreadsheet would run as a formula starts with one of these (OWASP, "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_PLAIN_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def yuan(fen: int | None) -> str:
    """``123456`` → ``1,234.56``; ``-5`` → ``-0.05``; None → an empty string. Integer arithmetic
    only: fen are never a float."""
    if fen is None:
        return ""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole:,}.{cents:02d}"


def csv_cell(value: object) -> str:
    """A cell's text for export: a text that starts like a formula gets a leading ``'`` (a plain
    number, such as ``-12.50``, is left as it is)."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(text):
        return "'" + text
    return text
