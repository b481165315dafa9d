"""The bank statement as ISO 20022 camt.053 (BankToCustomerStatement) XML
(docs/bank-statements.md, "camt.053"): the elements read, and how.

Parsed with the standard library's expat, safely: the size is bounded before parsing
(``parsing.MAX_BYTES``), a document type declaration (and with it every entity, internal or
external) is refused as soon as expat meets it, external entities and parameter entities are
never read, and the depth, the count of elements and the length of each text are bounded while
parsing. The tree kept is our own small one, built from expat's events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Final
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

from settlement.statements.parsing import (
    ACCOUNT,
    CURRENCY,
    MAX_AMOUNT,
    MAX_BALANCE,
    REFERENCE,
    STATEMENT_ID,
    Direction,
    Format,
    ParsedLine,
    ParsedStatement,
    StatementMalformed,
    decimal_fen,
    fen_decimal,
    iso_date,
    required_text,
    text_value,
)

NAMESPACE: Final = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.(0[2-9]|1[0-3])$")
WRITTEN_NAMESPACE: Final = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"
MAX_DEPTH: Final = 32
MAX_ELEMENTS: Final = 300_000
MAX_TEXT: Final = 1000
NOT_PROVIDED: Final = "NOTPROVIDED"


@dataclass(slots=True)
class Node:
    name: str  # local name
    line: int
    attributes: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def all(self, name: str) -> list[Node]:
        return [c for c in self.children if c.name == name]

    def find(self, path: str) -> Node | None:
        node: Node | None = self
        for step in path.split("/"):
            if node is None:
                return None
            node = next((c for c in node.children if c.name == step), None)
        return node

    def value(self, path: str) -> str | None:
        found = self.find(path)
        return found.text.strip() if found is not None else None


class _Refused(Exception):
    def __init__(self, code: str, detail: str, line: int) -> None:
        super().__init__(detail)
        self.code, self.detail, self.line = code, detail, line


def _tree(data: bytes) -> tuple[str, Node]:
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True  # one call per text, not one per line of it
    stack: list[Node] = []
    root: list[tuple[str, Node]] = []
    count = 0

    def refuse(code: str, detail: str) -> None:
        raise _Refused(code, detail, parser.CurrentLineNumber)

    def doctype(*_args: object) -> None:
        refuse("doctype", "a document type declaration (DTD, entities) is not accepted")

    def entity(*_args: object) -> None:
        refuse("doctype", "entity declarations are not accepted")

    def external(*_args: object) -> int:
        refuse("doctype", "external entities are not read")
        return 0

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal count
        count += 1
        if count > MAX_ELEMENTS:
            refuse("too_large", f"more than {MAX_ELEMENTS} elements")
        if len(stack) >= MAX_DEPTH:
            refuse("too_deep", f"elements nested deeper than {MAX_DEPTH}")
        uri, _, local = name.rpartition(" ")
        names = {k.rpartition(" ")[2]: v for k, v in attributes.items()} if attributes else {}
        node = Node(local, parser.CurrentLineNumber, names)
        if stack:
            stack[-1].children.append(node)
        else:
            root.append((uri, node))
        stack.append(node)

    def end(_name: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            node = stack[-1]
            if not node.text and not data.strip():
                return  # the white space between elements: kept nowhere, counted nowhere
            if len(node.text) + len(data) > MAX_TEXT:
                refuse("field", f"a text longer than {MAX_TEXT} characters")
            node.text += data

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = entity
    parser.UnparsedEntityDeclHandler = entity
    parser.ExternalEntityRefHandler = external
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except _Refused as exc:
        raise StatementMalformed(exc.code, exc.detail, line=exc.line) from None
    except expat.ExpatError as exc:
        raise StatementMalformed(
            "xml", expat.ErrorString(exc.code) or "not well-formed", line=exc.lineno
        ) from None
    except (LookupError, ValueError, UnicodeError, RecursionError) as exc:  # an unknown encoding
        raise StatementMalformed("xml", f"not readable: {type(exc).__name__}") from None
    if not root:
        raise StatementMalformed("xml", "no document element")
    return root[0]


def _required(node: Node, path: str, where: str) -> Node:
    found = node.find(path)
    if found is None:
        raise StatementMalformed("missing", "is required", line=node.line, field=f"{where}/{path}")
    return found


def _amount(node: Node, where: str, most: int = MAX_AMOUNT) -> int:
    currency = node.attributes.get("Ccy")
    if currency != CURRENCY:
        raise StatementMalformed(
            "currency", f"Ccy must be {CURRENCY}", line=node.line, field=f"{where}/@Ccy"
        )
    return decimal_fen(node.text.strip(), line=node.line, name=where, most=most)


def _date(node: Node, path: str, where: str) -> date:
    holder = _required(node, path, where)
    day = holder.value("Dt")
    if day is None:
        moment = holder.value("DtTm")
        if moment is None:
            raise StatementMalformed(
                "missing", "Dt or DtTm is required", line=holder.line, field=f"{where}/{path}"
            )
        day = moment[:10]
    return iso_date(day, line=holder.line, name=f"{where}/{path}")


def _account(node: Node | None) -> str | None:
    if node is None:
        return None
    return node.value("Id/IBAN") or node.value("Id/Othr/Id")


def _party_name(node: Node | None) -> str | None:
    if node is None:
        return None
    return node.value("Nm") or node.value("Pty/Nm")


def _tx_amount(detail: Node) -> Node | None:
    found = detail.find("Amt")
    return found if found is not None else detail.find("AmtDtls/TxAmt/Amt")


def _balances(statement: Node) -> tuple[int | None, int | None]:
    found: dict[str, int] = {}
    for n, balance in enumerate(statement.all("Bal"), start=1):
        where = f"Stmt/Bal[{n}]"
        kind = balance.value("Tp/CdOrPrtry/Cd")
        if kind not in ("OPBD", "CLBD"):
            continue
        fen = _amount(_required(balance, "Amt", where), f"{where}/Amt", MAX_BALANCE)
        sign = balance.value("CdtDbtInd")
        if sign not in ("CRDT", "DBIT"):
            raise StatementMalformed(
                "field", "CdtDbtInd is CRDT or DBIT", line=balance.line, field=f"{where}/CdtDbtInd"
            )
        if kind in found:
            raise StatementMalformed(
                "field", f"two {kind} balances", line=balance.line, field=where
            )
        found[kind] = fen if sign == "CRDT" else -fen
    return found.get("OPBD"), found.get("CLBD")


def _lines(entry: Node, n: int, first_no: int) -> list[ParsedLine]:
    where = f"Stmt/Ntry[{n}]"
    amount = _amount(_required(entry, "Amt", where), f"{where}/Amt")
    indicator = entry.value("CdtDbtInd")
    if indicator not in ("CRDT", "DBIT"):
        raise StatementMalformed(
            "field", "CdtDbtInd is CRDT or DBIT", line=entry.line, field=f"{where}/CdtDbtInd"
        )
    direction = Direction.credit if indicator == "CRDT" else Direction.debit
    status = entry.value("Sts/Cd") or entry.value("Sts")
    if status is not None and status != "BOOK":
        raise StatementMalformed(
            "entry_status", "only booked entries (BOOK) are read", line=entry.line,
            field=f"{where}/Sts",
        )  # fmt: skip
    booked = _date(entry, "BookgDt", where)
    valued = _date(entry, "ValDt", where) if entry.find("ValDt") is not None else None
    bank_reference = text_value(
        entry.value("AcctSvcrRef"), line=entry.line, name=f"{where}/AcctSvcrRef",
        pattern=REFERENCE, max_length=64,
    )  # fmt: skip
    details = [d for group in entry.all("NtryDtls") for d in group.all("TxDtls")]
    if len(details) > 1:
        amounts = []
        for m, detail in enumerate(details, start=1):
            found = _tx_amount(detail)
            if found is None:
                raise StatementMalformed(
                    "missing", "each transaction of a batch entry needs its Amt",
                    line=detail.line, field=f"{where}/NtryDtls/TxDtls[{m}]/Amt",
                )  # fmt: skip
            amounts.append(_amount(found, f"{where}/NtryDtls/TxDtls[{m}]/Amt"))
        if sum(amounts) != amount:
            raise StatementMalformed(
                "batch_sum", "the transactions of the entry do not add up to its Amt",
                line=entry.line, field=f"{where}/Amt",
            )  # fmt: skip
    else:
        amounts = [amount]
    out = []
    for m, share in enumerate(amounts):
        tx = details[m] if details else None
        at = f"{where}/NtryDtls/TxDtls[{m + 1}]"
        line = tx.line if tx is not None else entry.line
        reference = remittance = name = account = None
        if tx is not None:
            if len(details) == 1:
                own = _tx_amount(tx)
                if own is not None and _amount(own, f"{at}/Amt") != amount:
                    raise StatementMalformed(
                        "batch_sum", "the transaction's Amt is not the entry's", line=line,
                        field=f"{at}/Amt",
                    )  # fmt: skip
            e2e = tx.value("Refs/EndToEndId")
            reference = text_value(
                None if e2e == NOT_PROVIDED else e2e, line=line, name=f"{at}/Refs/EndToEndId",
                pattern=REFERENCE, max_length=64,
            )  # fmt: skip
            parties = tx.find("RltdPties")
            if parties is not None:
                other = "Cdtr" if direction is Direction.debit else "Dbtr"
                name = text_value(
                    _party_name(parties.find(other)), line=line, name=f"{at}/RltdPties/{other}/Nm"
                )
                account = text_value(
                    _account(parties.find(f"{other}Acct")), line=line,
                    name=f"{at}/RltdPties/{other}Acct/Id", pattern=ACCOUNT, max_length=34,
                )  # fmt: skip
            remittance = text_value(tx.value("RmtInf/Ustrd"), line=line, name=f"{at}/RmtInf/Ustrd")
        out.append(
            ParsedLine(
                first_no + m, booked, valued, direction, share, reference, bank_reference,
                account, name, remittance,
            )
        )  # fmt: skip
    return out


def parse(data: bytes) -> ParsedStatement:
    uri, document = _tree(data)
    if document.name != "Document" or not NAMESPACE.match(uri):
        raise StatementMalformed(
            "not_camt053",
            "the document element must be Document in a camt.053.001 namespace (02 to 13)",
            line=document.line,
        )
    statements = [s for group in document.all("BkToCstmrStmt") for s in group.all("Stmt")]
    if len(statements) != 1:
        raise StatementMalformed(
            "statements", f"one Stmt per file ({len(statements)} found)", line=document.line,
            field="BkToCstmrStmt/Stmt",
        )  # fmt: skip
    (statement,) = statements
    statement_id = required_text(
        statement.value("Id"), line=statement.line, name="Stmt/Id", pattern=STATEMENT_ID,
        max_length=35,
    )  # fmt: skip
    account = required_text(
        _account(statement.find("Acct")), line=statement.line, name="Stmt/Acct/Id",
        pattern=ACCOUNT, max_length=34,
    )  # fmt: skip
    currency = statement.value("Acct/Ccy") or CURRENCY
    opening, closing = _balances(statement)
    lines: list[ParsedLine] = []
    for n, entry in enumerate(statement.all("Ntry"), start=1):
        lines.extend(_lines(entry, n, len(lines) + 1))
    return ParsedStatement(Format.camt053, statement_id, account, currency, opening, closing, lines)


def write(statement: ParsedStatement) -> bytes:
    """The statement as camt.053.001.02 (what a test or a bank simulator sends): one entry per
    line, its details in one TxDtls."""

    def el(name: str, text: str) -> str:
        return f"<{name}>{escape(text)}</{name}>"

    def amount(fen: int) -> str:
        return f"<Amt Ccy={quoteattr(statement.currency)}>{fen_decimal(fen)}</Amt>"

    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<Document xmlns="{WRITTEN_NAMESPACE}"><BkToCstmrStmt>',
        "<GrpHdr><MsgId>" + escape(statement.statement_id) + "</MsgId></GrpHdr>",
        "<Stmt>" + el("Id", statement.statement_id),
        "<Acct><Id><Othr>" + el("Id", statement.account) + "</Othr></Id>"
        + el("Ccy", statement.currency) + "</Acct>",
    ]  # fmt: skip
    for code, fen in (("OPBD", statement.opening_balance), ("CLBD", statement.closing_balance)):
        if fen is not None:
            parts.append(
                f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>{amount(abs(fen))}"
                f"<CdtDbtInd>{'CRDT' if fen >= 0 else 'DBIT'}</CdtDbtInd></Bal>"
            )
    for line in statement.lines:
        parts.append("<Ntry>" + amount(line.amount))
        parts.append(el("CdtDbtInd", "CRDT" if line.direction is Direction.credit else "DBIT"))
        parts.append("<Sts>BOOK</Sts>")
        parts.append("<BookgDt>" + el("Dt", line.booking_date.isoformat()) + "</BookgDt>")
        if line.value_date is not None:
            parts.append("<ValDt>" + el("Dt", line.value_date.isoformat()) + "</ValDt>")
        if line.bank_reference is not None:
            parts.append(el("AcctSvcrRef", line.bank_reference))
        parts.append("<BkTxCd/>")
        detail = []
        if line.reference is not None:
            detail.append("<Refs>" + el("EndToEndId", line.reference) + "</Refs>")
        other = "Cdtr" if line.direction is Direction.debit else "Dbtr"
        parties = []
        if line.counterparty_name is not None:
            parties.append(f"<{other}>" + el("Nm", line.counterparty_name) + f"</{other}>")
        if line.counterparty_account is not None:
            parties.append(
                f"<{other}Acct><Id><Othr>" + el("Id", line.counterparty_account)
                + f"</Othr></Id></{other}Acct>"
            )  # fmt: skip
        if parties:
            detail.append("<RltdPties>" + "".join(parties) + "</RltdPties>")
        if line.remittance is not None:
            detail.append("<RmtInf>" + el("Ustrd", line.remittance) + "</RmtInf>")
        if detail:
            parts.append("<NtryDtls><TxDtls>" + "".join(detail) + "</TxDtls></NtryDtls>")
        parts.append("</Ntry>")
    parts.append("</Stmt></BkToCstmrStmt></Document>")
    return "\n".join(parts).encode("utf-8")
