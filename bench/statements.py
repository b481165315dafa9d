"""Bank statement parsing at the size limit (docs/bank-statements.md; medians, never a test).

    uv run python bench/statements.py [--runs 5]

Builds the largest statements the limits allow (2 MiB; at most 20 000 lines) in both formats,
each line a payout-like debit with a reference, a counterparty and a remittance, and prints the
median time to parse each (size bounded first, CSV reader or expat with our handlers), its lines
per second, and the ratio to reading the same bytes with the bare standard-library parser (what
the safety checks and the field rules cost).
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import time
from collections.abc import Callable
from datetime import date, timedelta
from functools import partial
from xml.parsers import expat

from settlement.statements import camt053, csv_layout
from settlement.statements.parsing import (
    MAX_BYTES,
    MAX_LINES,
    Direction,
    Format,
    ParsedLine,
    ParsedStatement,
    parse,
)

DAY = date(2026, 12, 2)


def statement(format: Format, count: int) -> ParsedStatement:
    lines = [
        ParsedLine(
            n, DAY, DAY + timedelta(days=1), Direction.debit, 10_000 + n,
            f"P20261202{n:015d}", f"BK{n:010d}", f"6222{n:012d}", f"商户 {n}", "结算款",
        )
        for n in range(1, count + 1)
    ]  # fmt: skip
    return ParsedStatement(format, "BENCH-20261202", "6222000099990000", "CNY", None, None, lines)


def largest(format: Format) -> bytes:
    """The most lines (up to MAX_LINES) whose file stays within MAX_BYTES."""
    writer = csv_layout.write if format is Format.csv else camt053.write
    low, high = 1, MAX_LINES
    while low < high:
        mid = (low + high + 1) // 2
        if len(writer(statement(format, mid))) <= MAX_BYTES:
            low = mid
        else:
            high = mid - 1
    return writer(statement(format, low))


def bare(format: Format, data: bytes) -> None:
    if format is Format.csv:
        for _row in csv.reader(io.StringIO(data.decode("utf-8"), newline="")):
            pass
    else:
        expat.ParserCreate(namespace_separator=" ").Parse(data, True)


def median_seconds(work: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    for format in (Format.csv, Format.camt053):
        data = largest(format)
        count = len(parse(data).lines)
        ours = median_seconds(partial(parse, data), runs)
        raw = median_seconds(partial(bare, format, data), runs)
        print(
            f"{format.value:8} {len(data):>9,} bytes {count:>6,} lines: parse {ours * 1000:7.1f} ms "
            f"({count / ours:>9,.0f} lines/s), bare stdlib {raw * 1000:6.1f} ms, ratio {ours / raw:4.1f}"
        )


if __name__ == "__main__":
    main()
