"""The bank statement parsers (CSV layout and camt.053): generated statements round-trip
through both formats, and whatever bytes arrive (garbage, a valid file cut or changed anywhere,
XML with a DTD or entities) each parser answers a statement or ``StatementMalformed``, nothing
else."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settlement.statements import camt053, csv_layout
from settlement.statements.parsing import (
    MAX_BYTES,
    MAX_LINES,
    Direction,
    Format,
    ParsedLine,
    ParsedStatement,
    StatementMalformed,
    decimal_fen,
    fen_decimal,
    parse,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

references = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9/\-:_]{0,40}\Z")
accounts = st.from_regex(r"\A[A-Z0-9]{6,34}\Z")
# Names and remittances: Chinese, Latin and the punctuation files meet (commas, quotes, < & >).
texts = (
    st.text(
        alphabet=st.sampled_from(list("市民卡公交出租汽车公司 ABCxyz019,\"'<>&;=+-@")),
        min_size=1,
        max_size=60,
    )
    .map(str.strip)
    .filter(bool)
)
days = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))


@st.composite
def lines(draw: st.DrawFn, n: int) -> ParsedLine:
    return ParsedLine(
        line_no=n,
        booking_date=draw(days),
        value_date=draw(st.none() | days),
        direction=draw(st.sampled_from(Direction)),
        amount=draw(st.integers(1, 10**12)),
        reference=draw(st.none() | references),
        bank_reference=draw(st.none() | references),
        counterparty_account=draw(st.none() | accounts),
        counterparty_name=draw(st.none() | texts),
        remittance=draw(st.none() | texts),
    )


@st.composite
def statements(draw: st.DrawFn, format: Format) -> ParsedStatement:
    count = draw(st.integers(1, 8))
    body = [draw(lines(n)) for n in range(1, count + 1)]
    opening = closing = None
    if format is Format.camt053 and draw(st.booleans()):
        opening = draw(st.integers(-(10**12), 10**12))
        closing = opening + sum(
            line.amount if line.direction is Direction.credit else -line.amount for line in body
        )
    return ParsedStatement(
        format=format,
        statement_id=draw(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9\-/]{0,34}\Z")),
        account=draw(accounts),
        currency="CNY",
        opening_balance=opening,
        closing_balance=closing,
        lines=body,
    )


@FAST
@given(statements(Format.csv))
def test_csv_round_trip(statement: ParsedStatement) -> None:
    assert parse(csv_layout.write(statement)) == statement


@FAST
@given(statements(Format.camt053))
def test_camt053_round_trip(statement: ParsedStatement) -> None:
    assert parse(camt053.write(statement)) == statement


@given(st.integers(0, 10**12))
def test_decimal_amounts_are_fen(fen: int) -> None:
    assert decimal_fen(fen_decimal(fen), line=None, name="x") == fen


def test_decimal_amounts() -> None:
    assert [decimal_fen(t, line=None, name="x") for t in ("0", "1", "1.5", "1.50", "12.34")] == [
        0, 100, 150, 150, 1234,
    ]  # fmt: skip
    for bad in ("1.234", "-1", "1e3", "01", " 1", "1,000.00", "NaN", "", "1."):
        with pytest.raises(StatementMalformed, match=r"^amount"):
            decimal_fen(bad, line=3, name="Amt")


def _answers(data: bytes) -> None:
    for format in (None, Format.csv, Format.camt053):
        with contextlib.suppress(StatementMalformed):
            parse(data, format)


@FAST
@given(st.binary(max_size=400))
def test_garbage_is_refused_cleanly(data: bytes) -> None:
    _answers(data)


@FAST
@given(statements(Format.camt053), st.data())
def test_a_changed_file_is_read_or_refused_cleanly(
    statement: ParsedStatement, data: st.DataObject
) -> None:
    for raw in (csv_layout.write(statement), camt053.write(statement)):
        at = data.draw(st.integers(0, len(raw) - 1))
        how = data.draw(st.sampled_from(["cut", "flip", "insert", "delete"]))
        byte = data.draw(st.binary(min_size=1, max_size=3))
        changed = {
            "cut": raw[:at],
            "flip": raw[:at] + byte + raw[at + len(byte) :],
            "insert": raw[:at] + byte + raw[at:],
            "delete": raw[:at] + raw[at + 3 :],
        }[how]
        _answers(changed)


@FAST
@given(st.text(max_size=300))
def test_text_garbage_as_csv_and_xml(text: str) -> None:
    _answers(text.encode("utf-8", "surrogatepass"))
    _answers(("<Document>" + text + "</Document>").encode("utf-8", "surrogatepass"))


SMALL = ParsedStatement(
    Format.csv, "STMT-1", "6222000011112222", "CNY", None, None,
    [ParsedLine(1, date(2026, 12, 2), None, Direction.debit, 12345, "PO-1", "B-1", None, "Bus Co", None)],
)  # fmt: skip


def test_csv_errors_name_the_line_and_field() -> None:
    good = csv_layout.write(SMALL).decode()
    header, row = good.splitlines()
    cases = {
        "nonsense": "header at line 1",
        header + "\r\n": "empty at line 1",
        header + "\r\n" + row.replace("12345", "12.34"): "amount at line 2, field amount",
        header
        + "\r\n"
        + row
        + "\r\n"
        + row.replace("2026-12-02", "2026-02-30"): "date at line 3, field booking_date",
        header + "\r\n" + row.replace(",debit,", ",out,"): "field at line 2, field direction",
        header
        + "\r\n"
        + row
        + "\r\n"
        + row.replace("STMT-1", "STMT-2"): "inconsistent at line 3, field statement_id",
        header + "\r\n" + row + ",extra": "columns at line 2",
        header + "\r\n" + row.replace(",CNY,", ",USD,"): "currency",
        header + "\r\n" + row.replace("Bus Co", '"Bus\nCo"'): "field at line",
    }
    for text, expected in cases.items():
        with pytest.raises(StatementMalformed) as caught:
            parse(text.encode())
        assert caught.value.detail.startswith(expected), (text, caught.value.detail)
    with pytest.raises(StatementMalformed, match=r"^encoding at line 2"):
        parse(header.encode() + b"\r\n\xff\xfe")


CAMT = camt053.write(SMALL).decode()


def test_camt053_errors_name_the_element() -> None:
    cases = {
        CAMT.replace("<Id>STMT-1</Id>", ""): "missing at line",
        CAMT.replace('Ccy="CNY">123.45', 'Ccy="USD">123.45'): "currency",
        CAMT.replace("123.45", "123.456"): "amount",
        CAMT.replace("<Sts>BOOK</Sts>", "<Sts>PDNG</Sts>"): "entry_status",
        CAMT.replace("camt.053.001.02", "camt.052.001.02"): "not_camt053",
        CAMT.replace("</Stmt>", "</Stmt><Stmt><Id>X</Id></Stmt>"): "statements",
        CAMT.replace("</Document>", ""): "xml at line",
        CAMT.replace("<CdtDbtInd>DBIT", "<CdtDbtInd>OUT"): "field at line",
    }
    for text, expected in cases.items():
        with pytest.raises(StatementMalformed) as caught:
            parse(text.encode())
        assert caught.value.detail.startswith(expected), (expected, caught.value.detail)
    with pytest.raises(StatementMalformed) as caught:
        parse(CAMT.replace("123.45", "1x").encode())
    assert "field Stmt/Ntry[1]/Amt" in caught.value.detail


@pytest.mark.parametrize("encoding", ["U-F-8", "EBCDIC-XYZ"])
def test_an_encoding_expat_does_not_know_is_refused(encoding: str) -> None:
    """Found by the changed-file property: expat raises LookupError for an unknown name."""
    document = b'<?xml version="1.0" encoding="%s"?>' % encoding.encode() + b"<Document/>"
    with pytest.raises(StatementMalformed, match=r"^xml: not readable"):
        parse(document)


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">&lol2;</Document>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt><Stmt><Id>&x;</Id></Stmt></BkToCstmrStmt></Document>"""
PARAMETER = b"""<?xml version="1.0"?>
<!DOCTYPE d SYSTEM "http://127.0.0.1:1/evil.dtd">
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"/>"""


@pytest.mark.parametrize(
    "document", [BOMB, EXTERNAL, PARAMETER], ids=["bomb", "external", "system"]
)
def test_no_dtd_no_entities(document: bytes) -> None:
    with pytest.raises(StatementMalformed, match=r"^doctype at line 2"):
        parse(document)


def test_limits_before_parsing() -> None:
    with pytest.raises(StatementMalformed, match=r"^too_large"):
        parse(b"<" + b" " * MAX_BYTES)
    deep = b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">' + b"<a>" * 40
    with pytest.raises(StatementMalformed, match=r"^too_deep"):
        parse(deep)
    many = SMALL.lines * (MAX_LINES + 1)
    with pytest.raises(StatementMalformed, match=r"^too_many_lines"):
        parse(csv_layout.write(ParsedStatement(Format.csv, "S", "A1", "CNY", None, None, many)))


def test_a_long_indented_camt053_statement() -> None:
    """The white space between thousands of entries is no text of their statement."""
    many = replace(
        SMALL,
        format=Format.camt053,
        lines=[replace(SMALL.lines[0], line_no=n) for n in range(1, 3001)],
    )
    document = camt053.write(many).replace(b"<Ntry>", b"\n    <Ntry>")
    assert len(parse(document).lines) == 3000
    with pytest.raises(StatementMalformed, match=r"^field at line"):
        parse(
            camt053.write(replace(SMALL, format=Format.camt053)).replace(
                b"<Id>STMT-1</Id>", b"<Id>" + b"x" * 1001 + b"</Id>"
            )
        )


def test_camt053_batch_entries_and_later_versions() -> None:
    document = b"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">
 <BkToCstmrStmt>
  <Stmt>
   <Id>2026-12-02-A</Id>
   <Acct><Id><IBAN>CN12345678901234</IBAN></Id><Ccy>CNY</Ccy></Acct>
   <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">1000.00</Amt><CdtDbtInd>CRDT</CdtDbtInd></Bal>
   <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">700.00</Amt><CdtDbtInd>CRDT</CdtDbtInd></Bal>
   <Ntry>
    <Amt Ccy="CNY">300.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
    <BookgDt><DtTm>2026-12-02T10:00:00+08:00</DtTm></BookgDt>
    <AcctSvcrRef>BANK-9</AcctSvcrRef>
    <NtryDtls>
     <TxDtls><Refs><EndToEndId>PO-1</EndToEndId></Refs><AmtDtls><TxAmt><Amt Ccy="CNY">100.00</Amt></TxAmt></AmtDtls>
      <RltdPties><Cdtr><Pty><Nm>City Bus Co.</Nm></Pty></Cdtr><CdtrAcct><Id><Othr><Id>6222000011112222</Id></Othr></Id></CdtrAcct></RltdPties></TxDtls>
     <TxDtls><Refs><EndToEndId>NOTPROVIDED</EndToEndId></Refs><Amt Ccy="CNY">200.00</Amt><RmtInf><Ustrd>  taxi  </Ustrd></RmtInf></TxDtls>
    </NtryDtls>
   </Ntry>
  </Stmt>
 </BkToCstmrStmt>
</Document>"""
    parsed = parse(document)
    assert (parsed.statement_id, parsed.account) == ("2026-12-02-A", "CN12345678901234")
    assert (parsed.opening_balance, parsed.closing_balance) == (100000, 70000)
    first, second = parsed.lines
    assert (first.line_no, first.amount, first.reference, first.counterparty_name) == (
        1,
        10000,
        "PO-1",
        "City Bus Co.",
    )
    assert first.counterparty_account == "6222000011112222"
    assert first.booking_date == date(2026, 12, 2)
    assert (second.line_no, second.amount, second.reference, second.remittance) == (
        2,
        20000,
        None,
        "taxi",
    )
    assert first.bank_reference == second.bank_reference == "BANK-9"
    with pytest.raises(StatementMalformed, match=r"^balances"):
        parse(document.replace(b"700.00", b"701.00"))
    with pytest.raises(StatementMalformed, match=r"^batch_sum"):
        parse(document.replace(b"200.00", b"201.00"))
