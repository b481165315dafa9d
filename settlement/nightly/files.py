"""The settlement files of a day (docs/settlement-files.md): formatted from integer fen, in a
defined order, with nothing of the moment inside, so that a rerun writes the same bytes. Each
file is written aside in the day's directory and renamed into place, so a reader never sees half
of one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from settlement.nightly.repository import SummaryRow

BOM = "\ufeff"
# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
SUMMARY = "summary.csv"
SUMMARY_HEADER = ("merchant_no", "merchant_name", "class", "count", "gross", "fee", "net")


def yuan(fen: int) -> str:
    """Integer fen as yuan with exactly two decimals (no float on the way)."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def cell(value: str) -> str:
    """One CSV cell: quoted when it needs it, and a text that a spreadsheet would run as a
    formula prefixed with an apostrophe. Amounts are written by :func:`yuan` and never escaped:
    a negative amount is a number, not a formula."""
    if value.startswith(FORMULA_STARTS):
        value = "'" + value
    if any(ch in value for ch in ',"\n\r'):
        value = '"' + value.replace('"', '""') + '"'
    return value


def csv_line(cells: Iterable[str]) -> str:
    return ",".join(cells) + "\r\n"


async def write_summary(directory: Path, rows: AsyncIterator[SummaryRow]) -> Path:
    async def lines() -> AsyncIterator[str]:
        yield BOM + csv_line(SUMMARY_HEADER)
        async for row in rows:
            yield csv_line(
                (
                    cell(row.merchant_no),
                    cell(row.merchant_name),
                    cell(row.tx_class),
                    str(row.count),
                    yuan(row.gross),
                    yuan(row.fee),
                    yuan(row.gross - row.fee),
                )
            )

    return await write_atomically(directory / SUMMARY, lines())


async def write_atomically(path: Path, lines: AsyncIterator[str]) -> Path:
    """Write ``lines`` (UTF-8) beside ``path``, flush them to disk, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.part")
    with aside.open("w", encoding="utf-8", newline="") as out:
        async for line in lines:
            out.write(line)
        out.flush()
        os.fsync(out.fileno())
    os.replace(aside, path)
    return path
