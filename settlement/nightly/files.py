"""The settlement files of a day (docs/settlement-files.md): formatted from integer fen, in a
defined order, with nothing of the moment inside, so that a rerun writes the same bytes.

Every file of a run is written aside in the day's directory (``.<name>.part``) while its rows
stream from the database (never the whole day in memory), hashed as it is written; then one
``os.sync`` puts every aside on disk and each is renamed into place, so a reader never sees half
of one (a sync per file costs as much as the writing when an operator has thousands of
merchants). The manifest is written last, the same way, once the HSM has made its MAC.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO, Literal
from zoneinfo import ZoneInfo

from cardsvc.cards.numbers import mask_card_no
from settlement.billers.service import BatchRow
from settlement.nightly.repository import (
    DetailRow,
    LineRow,
    RefusedRow,
    ResultTotal,
    SummaryRow,
    UploadRow,
)
from settlement.payouts.models import PayeeKind
from settlement.payouts.service import PayoutLine

BOM = "\ufeff"
# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_FIRST = frozenset(FORMULA_STARTS)
_NEEDS_QUOTES = re.compile(r'[,"\n\r]')
SUMMARY = "summary.csv"
SUMMARY_HEADER = ("merchant_no", "merchant_name", "class", "count", "gross", "fee", "net")
DETAIL = "detail.csv"
DETAIL_HEADER = (
    "merchant_no", "class", "id", "terminal_no", "terminal_serial", "card", "time", "amount",
    "result", "reference",
)  # fmt: skip
BILLERS = "billers.csv"
BILLERS_HEADER = (
    "biller_code",
    "biller_name",
    "count",
    "payments",
    "gross",
    "fee",
    "net",
    "status",
)
MANIFEST = "manifest.json"
CRLF = "\r\n"


def yuan(fen: int) -> str:
    """Integer fen as yuan with exactly two decimals (no float on the way)."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def cell(value: str) -> str:
    """One CSV cell: quoted when it needs it, and a text that a spreadsheet would run as a
    formula prefixed with an apostrophe. Amounts are written by :func:`yuan` and never escaped:
    a negative amount is a number, not a formula."""
    if value[:1] in _FORMULA_FIRST:
        value = "'" + value
    if _NEEDS_QUOTES.search(value):
        value = '"' + value.replace('"', '""') + '"'
    return value


def csv_line(cells: Iterable[str]) -> str:
    return ",".join(cells) + CRLF


def masked(asn: str | None) -> str:
    """A card number as the rest of the system shows it (first 4 and last 4 digits)."""
    return mask_card_no(asn) if asn else ""


# --- writing a day's files ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WrittenFile:
    name: str
    size: int
    sha256: str


@dataclass
class _Aside:
    name: str
    path: Path
    out: IO[bytes]
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    size: int = 0

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self.out.write(data)
        self.digest.update(data)
        self.size += len(data)


class DayWriter:
    """The files of one run in one directory: each written aside and hashed on the way; none
    is in place before :meth:`publish`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._asides: list[_Aside] = []
        self._names: set[str] = set()

    def open(self, name: str) -> _Aside:
        if name in self._names or name == MANIFEST or "/" in name or name.startswith("."):
            raise ValueError(f"file name {name!r} taken or not allowed")
        self._names.add(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f".{name}.part"
        aside = _Aside(name, path, path.open("wb", buffering=1 << 16))
        self._asides.append(aside)
        return aside

    def close(self, aside: _Aside) -> None:
        aside.out.close()

    async def write(self, name: str, lines: AsyncIterator[str]) -> None:
        aside = self.open(name)
        try:
            async for line in lines:
                aside.write(line)
        finally:
            self.close(aside)

    def publish(self) -> list[WrittenFile]:
        """Put every aside on disk, then rename each into place; the files in name order."""
        for aside in self._asides:
            if not aside.out.closed:
                aside.out.close()
        os.sync()
        for aside in self._asides:
            os.replace(aside.path, self.directory / aside.name)
        _sync_directory(self.directory)
        return sorted(
            (WrittenFile(a.name, a.size, a.digest.hexdigest()) for a in self._asides),
            key=lambda f: f.name,
        )

    def discard(self) -> None:
        for aside in self._asides:
            if not aside.out.closed:
                aside.out.close()
            aside.path.unlink(missing_ok=True)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """One small file (the manifest): written beside ``path``, flushed to disk, renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.part")
    with aside.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(aside, path)
    _sync_directory(path.parent)


# --- finance: summary.csv and detail.csv ----------------------------------------------------


async def summary_lines(rows: AsyncIterator[SummaryRow]) -> AsyncIterator[str]:
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


async def biller_lines(rows: AsyncIterator[BatchRow]) -> AsyncIterator[str]:
    """``billers.csv``: one line per biller batch of the day, by biller code."""
    yield BOM + csv_line(BILLERS_HEADER)
    async for row in rows:
        yield csv_line(
            (
                cell(row.biller_code),
                cell(row.biller_name),
                str(row.count),
                str(row.payments),
                yuan(row.gross),
                yuan(row.fee),
                yuan(row.net),
                row.status.value,
            )
        )


def _local_time(tx_datetime: str | None, posted_at: datetime | None, zone: ZoneInfo) -> str:
    if tx_datetime and len(tx_datetime) == 14 and tx_datetime.isdigit():
        t = tx_datetime
        return f"{t[0:4]}-{t[4:6]}-{t[6:8]} {t[8:10]}:{t[10:12]}:{t[12:14]}"
    if posted_at is not None:
        from datetime import UTC

        moment = posted_at if posted_at.tzinfo else posted_at.replace(tzinfo=UTC)
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
    return ""


async def detail_lines(
    chunks: AsyncIterator[list[DetailRow]], zone: ZoneInfo
) -> AsyncIterator[str]:
    """The lines of ``detail.csv``, a chunk of rows at a time (one write per chunk)."""
    yield BOM + csv_line(DETAIL_HEADER)
    async for chunk in chunks:
        yield "".join([_detail_line(row, zone) for row in chunk])


def _detail_line(row: DetailRow, zone: ZoneInfo) -> str:
    return csv_line(
        (
            cell(row.merchant_no),
            cell(row.tx_class),
            str(row.source_id),
            cell(row.terminal_no or ""),
            "" if row.terminal_serial is None else str(row.terminal_serial),
            cell(masked(row.asn)),
            _local_time(row.tx_datetime, row.posted_at, zone),
            yuan(int(row.amount)),
            cell(row.result_code or ""),
            cell(row.reference or ""),
        )
    )


# --- the bank: bank-YYYYMMDD.csv ------------------------------------------------------------

BANK_HEADER = (
    "reference", "payer_account", "payee_bank", "payee_branch", "payee_account", "payee_name",
    "amount", "currency", "merchant_no", "biller_code",
)  # fmt: skip


def bank_name(day: date) -> str:
    return f"bank-{day:%Y%m%d}.csv"


async def bank_lines(rows: AsyncIterator[PayoutLine], payer_account: str) -> AsyncIterator[str]:
    """The batch payment file: one line per payout by reference, then a totals line."""
    yield csv_line(BANK_HEADER)
    count = total = 0
    async for row in rows:
        yield csv_line(
            (
                cell(row.reference),
                cell(payer_account),
                cell(row.bank_name or ""),
                cell(row.bank_branch or ""),
                cell(row.account_no or ""),
                cell(row.account_holder or ""),
                yuan(row.amount),
                "CNY",
                # The payee's number in the column of its kind, the other one empty.
                cell(row.merchant_no if row.payee_kind is PayeeKind.merchant else ""),
                cell(row.merchant_no if row.payee_kind is PayeeKind.biller else ""),
            )
        )
        count += 1
        total += row.amount
    yield csv_line(("TOTAL", str(count), yuan(total)))


# --- operators: fixed-width files -----------------------------------------------------------

Kind = Literal["N", "A", "S"]  # digits zero-padded right-aligned, text left-aligned, signed fen


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    width: int
    kind: Kind


@dataclass(frozen=True, slots=True)
class Layout:
    """One record type of a fixed-width file: its type letter (column 1) and its fields, then
    spaces up to ``length``; every record ends with CRLF."""

    record_type: str
    fields: tuple[Field, ...]
    length: int

    def columns(self) -> list[tuple[str, int, int, Kind]]:
        """(field, first column, width, kind), columns counted from 1 (the type letter)."""
        out, start = [], 2
        for f in self.fields:
            out.append((f.name, start, f.width, f.kind))
            start += f.width
        return out

    def record(self, *values: str | int | None) -> str:
        if len(values) != len(self.fields):
            raise ValueError(f"{self.record_type}: {len(values)} values for {len(self.fields)}")
        parts = [self.record_type]
        for f, value in zip(self.fields, values, strict=True):
            parts.append(_fixed(f, value))
        text = "".join(parts)
        if len(text) > self.length:
            raise ValueError(f"record {self.record_type} is longer than {self.length}")
        return text.ljust(self.length) + CRLF


def _fixed(f: Field, value: str | int | None) -> str:
    if value is None:  # a value the record did not carry: blank
        return " " * f.width
    if f.kind == "N":
        text = str(int(value))
        if int(value) < 0 or len(text) > f.width:
            raise ValueError(f"{f.name}={value} does not fit N{f.width}")
        return text.rjust(f.width, "0")
    if f.kind == "S":
        amount = int(value)
        text = ("-" if amount < 0 else "+") + str(abs(amount)).rjust(f.width - 1, "0")
        if len(text) > f.width:
            raise ValueError(f"{f.name}={value} does not fit S{f.width}")
        return text
    text = str(value)
    if not text.isascii() or len(text) > f.width or any(c in text for c in "\r\n"):
        raise ValueError(f"{f.name}={value!r} is not ASCII text of at most {f.width}")
    return text.ljust(f.width)


def _header(length: int) -> Layout:
    return Layout(
        "H",
        (Field("file_type", 2, "A"), Field("clearing_date", 8, "N"), Field("merchant_no", 15, "A")),
        length,
    )


STATEMENT_LENGTH = 100
STATEMENT_HEADER = _header(STATEMENT_LENGTH)
STATEMENT_CLASS = Layout(
    "C",
    (
        Field("class", 20, "A"),
        Field("count", 10, "N"),
        Field("gross", 15, "S"),
        Field("fee", 15, "S"),
        Field("net", 15, "S"),
    ),
    STATEMENT_LENGTH,
)
STATEMENT_RESULT = Layout(
    "R",
    (Field("result_code", 2, "A"), Field("count", 10, "N"), Field("amount", 15, "S")),
    STATEMENT_LENGTH,
)
STATEMENT_TOTAL = Layout(
    "T",
    (
        Field("count", 10, "N"),
        Field("gross", 15, "S"),
        Field("fee", 15, "S"),
        Field("net", 15, "S"),
        Field("records", 10, "N"),
        Field("records_amount", 15, "S"),
    ),
    STATEMENT_LENGTH,
)

REFUSALS_LENGTH = 120
REFUSALS_HEADER = _header(REFUSALS_LENGTH)
REFUSALS_RECORD = Layout(
    "D",
    (
        Field("result_code", 2, "A"),
        Field("uploading_terminal_no", 12, "A"),
        Field("batch_no", 10, "N"),
        Field("position", 6, "N"),
        Field("record_id", 16, "N"),
        Field("card", 16, "A"),
        Field("terminal_serial", 10, "N"),
        Field("tx_datetime", 14, "A"),
        Field("amount", 15, "S"),
        Field("gray", 1, "A"),
    ),
    REFUSALS_LENGTH,
)
REFUSALS_TOTAL = Layout("T", (Field("count", 10, "N"), Field("amount", 15, "S")), REFUSALS_LENGTH)

UPLOADS_LENGTH = 160
UPLOADS_HEADER = _header(UPLOADS_LENGTH)
UPLOADS_RECORD = Layout(
    "D",
    (
        Field("terminal_no", 12, "A"),
        Field("batch_no", 10, "N"),
        Field("records", 6, "N"),
        Field("amount", 15, "S"),
        Field("accepted", 6, "N"),
        Field("accepted_amount", 15, "S"),
        Field("refused", 6, "N"),
        Field("refused_amount", 15, "S"),
        Field("content_sha256", 64, "A"),
    ),
    UPLOADS_LENGTH,
)
UPLOADS_TOTAL = Layout(
    "T",
    (
        Field("batches", 10, "N"),
        Field("records", 10, "N"),
        Field("amount", 15, "S"),
        Field("accepted", 10, "N"),
        Field("accepted_amount", 15, "S"),
        Field("refused", 10, "N"),
        Field("refused_amount", 15, "S"),
    ),
    UPLOADS_LENGTH,
)


def statement_name(merchant_no: str) -> str:
    return f"operator-{merchant_no}-statement.txt"


def refusals_name(merchant_no: str) -> str:
    return f"operator-{merchant_no}-refusals.txt"


def uploads_name(merchant_no: str) -> str:
    return f"operator-{merchant_no}-uploads.txt"


def _ymd(day: date) -> int:
    return int(day.strftime("%Y%m%d"))


class _PerOperator:
    """Writes one file per operator from one stream ordered by merchant number: rows of a
    merchant go to its file, and an operator without rows still gets its header and a zero
    total."""

    def __init__(
        self,
        writer: DayWriter,
        day: date,
        operators: list[str],
        name_of: Callable[[str], str],
        header: Layout,
        file_type: str,
    ) -> None:
        self.writer, self.day, self.name_of = writer, day, name_of
        self.header, self.file_type = header, file_type
        self._pending = iter(operators)
        self._current: str | None = None
        self._out: _Aside | None = None

    def at(self, merchant_no: str) -> _Aside:
        """The file of ``merchant_no``, opening (and closing) the files of operators before."""
        if self._current == merchant_no and self._out is not None:
            return self._out
        self._finish_current()
        for operator in self._pending:
            out = self._start(operator)
            if operator == merchant_no:
                return out
            self._finish_current()
        raise ValueError(f"merchant {merchant_no} is not an operator of the day, or out of order")

    def _start(self, operator: str) -> _Aside:
        self._current = operator
        self._out = self.writer.open(self.name_of(operator))
        self._out.write(self.header.record(self.file_type, _ymd(self.day), operator))
        self.begin()
        return self._out

    def _finish_current(self) -> None:
        if self._out is not None:
            self._out.write(self.total())
            self.writer.close(self._out)
        self._out, self._current = None, None

    def finish(self) -> None:
        self._finish_current()
        for operator in self._pending:
            self._start(operator)
            self._finish_current()

    def begin(self) -> None:
        """Reset the totals of a new operator's file."""

    def total(self) -> str:
        raise NotImplementedError


class _Refusals(_PerOperator):
    def begin(self) -> None:
        self.count = self.amount = 0

    def add(self, row: RefusedRow) -> None:
        out = self.at(row.merchant_no)
        out.write(
            REFUSALS_RECORD.record(
                row.result_code, row.terminal_no, row.batch_no, row.position, row.record_id,
                masked(row.asn) or None, row.terminal_serial, row.tx_datetime, row.amount,
                "Y" if row.gray else "N",
            )
        )  # fmt: skip
        self.count += 1
        self.amount += row.amount or 0

    def total(self) -> str:
        return REFUSALS_TOTAL.record(self.count, self.amount)


class _Uploads(_PerOperator):
    def begin(self) -> None:
        self.sums = [0] * 7

    def add(self, row: UploadRow) -> None:
        out = self.at(row.merchant_no)
        out.write(
            UPLOADS_RECORD.record(
                row.terminal_no, row.batch_no, row.record_count, row.total_amount,
                row.accepted_count, row.accepted_amount, row.refused_count, row.refused_amount,
                row.content_hash,
            )
        )  # fmt: skip
        values = (
            1, row.record_count, row.total_amount, row.accepted_count, row.accepted_amount,
            row.refused_count, row.refused_amount,
        )  # fmt: skip
        self.sums = [a + b for a, b in zip(self.sums, values, strict=True)]

    def total(self) -> str:
        return UPLOADS_TOTAL.record(*self.sums)


class _Statement(_PerOperator):
    """Class lines first, then result lines: the two streams are written one after the other
    per operator, so the lines of one operator are buffered (a handful: one per class and one
    per result code)."""

    def begin(self) -> None:
        self.classes: list[LineRow] = []
        self.results: list[ResultTotal] = []

    def total(self) -> str:
        if self._out is None:
            raise RuntimeError("no statement open")
        count = gross = fee = 0
        for line in self.classes:
            self._out.write(
                STATEMENT_CLASS.record(
                    line.tx_class, line.count, line.gross, line.fee, line.gross - line.fee
                )
            )
            count, gross, fee = count + line.count, gross + line.gross, fee + line.fee
        records = amount = 0
        for result in self.results:
            self._out.write(
                STATEMENT_RESULT.record(result.result_code, result.count, result.amount)
            )
            records, amount = records + result.count, amount + result.amount
        return STATEMENT_TOTAL.record(count, gross, fee, gross - fee, records, amount)


@dataclass(frozen=True, slots=True)
class OperatorStreams:
    lines: Callable[[], AsyncIterator[LineRow]]
    results: Callable[[], AsyncIterator[ResultTotal]]
    refused: Callable[[], AsyncIterator[RefusedRow]]
    uploads: Callable[[], AsyncIterator[UploadRow]]


async def write_operator_files(
    writer: DayWriter, day: date, operators: list[str], streams: OperatorStreams
) -> None:
    """The statement, the refusal list and the list of cleared uploads of every operator."""
    refusals = _Refusals(writer, day, operators, refusals_name, REFUSALS_HEADER, "SS")
    async for refused in streams.refused():
        refusals.add(refused)
    refusals.finish()

    uploads = _Uploads(writer, day, operators, uploads_name, UPLOADS_HEADER, "NS")
    async for upload in streams.uploads():
        uploads.add(upload)
    uploads.finish()

    # The statement merges two short per-merchant streams: the lines (by class) and the
    # records of the day by result code. Each is small per merchant; they are read into the
    # statement of one merchant at a time.
    statement = _Statement(writer, day, operators, statement_name, STATEMENT_HEADER, "QS")
    results = aiter(streams.results())
    pending: ResultTotal | None = await anext(results, None)
    async for line in streams.lines():
        while pending is not None and pending.merchant_no < line.merchant_no:
            statement.at(pending.merchant_no)
            statement.results.append(pending)
            pending = await anext(results, None)
        statement.at(line.merchant_no)
        statement.classes.append(line)
    while pending is not None:
        statement.at(pending.merchant_no)
        statement.results.append(pending)
        pending = await anext(results, None)
    statement.finish()
