"""The reconciliation file of docs/biller-protocol.md §8: what the builder writes the parser
reads back line for line, with the totals of the lines; what is not of §8 is refused."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from settlement.billrecon import files

ALNUM = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                min_size=1, max_size=32)  # fmt: skip
RECEIPTS = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._-",
                   max_size=64)  # fmt: skip
LINES = st.builds(
    files.Line,
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)),
    serial=ALNUM,
    bill_key=ALNUM,
    amount=st.integers(min_value=1, max_value=files.MAX_AMOUNT),
    sub_channel=st.sampled_from(files.SUB_CHANNELS),
    type=st.sampled_from(files.TYPES),
    receipt_no=RECEIPTS,
)


@given(st.lists(LINES, max_size=40))
def test_what_is_built_is_read_back(lines: list[files.Line]) -> None:
    built = files.build(lines)
    data = built.data
    assert data.endswith(b"\n")
    assert built.sha256 == hashlib.sha256(data).hexdigest()
    head = data.split(b"\n", 1)[0].decode()
    payments = sum(ln.amount for ln in lines if ln.type == "payment")
    refunds = sum(ln.amount for ln in lines if ln.type == "refund")
    assert head == f"{len(lines)}|{payments - refunds}"
    parsed = files.parse(data)
    assert parsed == built
    assert list(parsed.lines) == lines


@given(st.lists(LINES, min_size=1, max_size=10), st.integers(min_value=1, max_value=9))
def test_totals_that_are_not_the_lines_are_refused(lines: list[files.Line], off: int) -> None:
    text = files.build(lines).text
    head, rest = text.split("\n", 1)
    count, total = head.split("|")
    for wrong in (f"{int(count) + off}|{total}", f"{count}|{int(total) + off}"):
        with pytest.raises(files.FileInvalid):
            files.parse(f"{wrong}\n{rest}".encode())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"0|0",  # the last line not ended
        b"1|5\n2026-12-02|B1|3100012345|5|online|payment\n",  # six fields
        b"1|5\n2026-12-02|B1|3100012345|05|online|payment|R1\n",  # a leading zero
        b"1|5\n2026-13-02|B1|3100012345|5|online|payment|R1\n",  # no such date
        b"1|5\n2026-12-02|B 1|3100012345|5|online|payment|R1\n",
        b"1|5\n2026-12-02|B1|3100012345|5|mobile|payment|R1\n",
        b"1|5\n2026-12-02|B1|3100012345|5|online|reversal|R1\n",
        b"1|-5\n2026-12-02|B1|3100012345|5|online|payment|R1\n",
        b"1|5\r\n2026-12-02|B1|3100012345|5|online|payment|R1\r\n",  # CRLF
        b"0|0\n\xff\n",
    ],
)
def test_what_is_not_of_the_protocol_is_refused(data: bytes) -> None:
    with pytest.raises(files.FileInvalid):
        files.parse(data)


def test_the_builder_refuses_a_field_that_would_break_a_line() -> None:
    good = files.Line(date(2026, 12, 2), "B1", "3100012345", 5, "online", "payment", "R1")
    files.build([good])
    for bad in (
        good.__class__(good.day, "B|1", good.bill_key, 5, "online", "payment", "R1"),
        good.__class__(good.day, "B1", "31\n00", 5, "online", "payment", "R1"),
        good.__class__(good.day, "B1", good.bill_key, 0, "online", "payment", "R1"),
        good.__class__(good.day, "B1", good.bill_key, 5, "online", "payment", "R|1"),
    ):
        with pytest.raises(files.FileInvalid):
            files.build([bad])
