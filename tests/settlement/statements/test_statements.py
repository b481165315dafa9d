"""Bank statement import: stored with its lines, matched to payouts by reference and amount
(confirmed, or a break for finance), the same file again changes nothing, another file under
the same id is refused, a malformed file stores nothing; lines stored before payouts were read
are matched later."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.audit.models import AuditEntry
from cardsvc.breaks.models import BreakItem, BreakKind
from cardsvc.clearing import service as clearing
from cardsvc.db import unit_of_work
from cardsvc.errors import Forbidden
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role, StaffPrincipal
from settlement.nightly import service as nightly
from settlement.payouts import service as payouts
from settlement.payouts.models import PayoutStatus
from settlement.payouts.schemas import PayeeIn
from settlement.statements import camt053, csv_layout
from settlement.statements import service as statements
from settlement.statements.models import BankStatement, BankStatementLine, MatchStatus
from settlement.statements.parsing import (
    MAX_BYTES,
    Direction,
    Format,
    ParsedLine,
    ParsedStatement,
    StatementMalformed,
)
from terminals.registry import service as registry
from terminals.registry.models import MerchantCategory
from tests.settlement.web.http import sign_in

DAY = date(2026, 12, 2)
FINANCE = StaffPrincipal(id=1, username="fin", roles=frozenset({Role.finance}), session_version=0)
AUDITOR = StaffPrincipal(id=2, username="aud", roles=frozenset({Role.auditor}), session_version=0)


class FakePayouts:
    """The payouts port over a dictionary: what matching sees and what it confirmed."""

    def __init__(self, *payouts: statements.Payout) -> None:
        self.rows = {p.reference: p for p in payouts}
        self.confirmed: list[tuple[str, str]] = []

    async def find(
        self, session: AsyncSession, references: Sequence[str]
    ) -> Mapping[str, statements.Payout]:
        return {r: self.rows[r] for r in references if r in self.rows}

    async def confirm(
        self, session: AsyncSession, reference: str, *, evidence: str, actor: str
    ) -> None:
        self.rows[reference] = replace(self.rows[reference], status="confirmed")
        self.confirmed.append((reference, evidence))


def payout(reference: str, amount: int, status: str = "issued") -> statements.Payout:
    return statements.Payout(reference, "321100000000001", date(2026, 12, 1), amount, status)


def line(
    n: int, amount: int, reference: str | None, direction: Direction = Direction.debit
) -> ParsedLine:
    return ParsedLine(
        n, DAY, DAY, direction, amount, reference, f"BANK-{n}", None, "City Bus Co.", None
    )


STATEMENT = ParsedStatement(
    Format.csv, "STMT-20261202", "6222000099990000", "CNY", None, None,
    [
        line(1, 10000, "PO-1"),  # matches
        line(2, 20000, "PO-2"),  # the payout is 19999
        line(3, 500, "PO-404"),  # no such payout
        line(4, 30000, "PO-3"),  # the payout is held, not issued
        line(5, 10000, "PO-1"),  # PO-1 again: already confirmed by line 1
        line(6, 700, None, Direction.credit),  # a credit with no reference
    ],
)  # fmt: skip


def world() -> FakePayouts:
    return FakePayouts(payout("PO-1", 10000), payout("PO-2", 19999), payout("PO-3", 30000, "held"))


async def count(session: AsyncSession, model: type) -> int:
    return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


@pytest.mark.parametrize("format", [Format.csv, Format.camt053])
async def test_import_matches_and_opens_breaks(resources: Resources, format: Format) -> None:
    payouts = world()
    data = (csv_layout if format is Format.csv else camt053).write(
        replace(STATEMENT, format=format)
    )
    async with unit_of_work(resources.sessions) as session:
        imported = await statements.import_statement(session, FINANCE, data, payouts=payouts)
    assert not imported.replayed
    assert payouts.confirmed == [("PO-1", f"bank statement {imported.statement.id} line 1")]
    async with resources.sessions() as session:
        detail = await statements.statement_detail(session, imported.statement.id)
        items = {b.id: b for b in (await session.execute(select(BreakItem))).scalars()}
        audit_actions = (await session.execute(select(AuditEntry.action))).scalars().all()
    assert detail.statement.format is format
    assert (detail.statement.line_count, detail.statement.debits, detail.statement.credits) == (
        6,
        70500,
        700,
    )
    assert [ln.match for ln in detail.lines] == [
        MatchStatus.matched, MatchStatus.differs, MatchStatus.unmatched, MatchStatus.differs,
        MatchStatus.differs, MatchStatus.unmatched,
    ]  # fmt: skip
    assert detail.counts == {
        MatchStatus.matched: 1,
        MatchStatus.differs: 3,
        MatchStatus.unmatched: 2,
    }
    assert detail.lines[0].break_id is None
    opened = [items[ln.break_id] for ln in detail.lines[1:] if ln.break_id]
    assert [b.kind for b in opened] == [
        BreakKind.bank_line_differs, BreakKind.unmatched_bank_line, BreakKind.bank_line_differs,
        BreakKind.bank_line_differs, BreakKind.unmatched_bank_line,
    ]  # fmt: skip
    assert [b.amount for b in opened] == [1, 500, 30000, 10000, 700]  # the difference, or the line
    assert opened[0].reason == "payout PO-2 is 19999 fen, the bank 20000"
    assert opened[0].clearing_date == date(2026, 12, 1)  # the payout's day
    assert opened[1].clearing_date == DAY  # no payout: the booking day
    assert opened[1].reference == "PO-404"
    assert opened[4].reference == "BANK-6"  # no reference of ours: the bank's
    assert opened[3].reason == "payout PO-1 is confirmed, not issued"
    assert "bank_statement.import" in audit_actions

    # The same file again: nothing changes.
    async with unit_of_work(resources.sessions) as session:
        again = await statements.import_statement(session, FINANCE, data, payouts=payouts)
    assert again.replayed
    assert again.statement.id == imported.statement.id
    async with resources.sessions() as session:
        assert await count(session, BankStatement) == 1
        assert await count(session, BankStatementLine) == 6
        assert await count(session, BreakItem) == 5
    assert len(payouts.confirmed) == 1

    # Another file under the same account and statement id: refused, nothing stored.
    changed = replace(STATEMENT, format=format, lines=STATEMENT.lines[:2])
    other = (csv_layout if format is Format.csv else camt053).write(changed)
    with pytest.raises(statements.StatementConflict, match="another file"):
        async with unit_of_work(resources.sessions) as session:
            await statements.import_statement(session, FINANCE, other, payouts=payouts)
    async with resources.sessions() as session:
        assert await count(session, BankStatementLine) == 6


async def test_a_malformed_file_stores_nothing(resources: Resources) -> None:
    data = csv_layout.write(STATEMENT).replace(b"20000", b"2x000")
    with pytest.raises(StatementMalformed, match=r"^amount at line 3, field amount"):
        async with unit_of_work(resources.sessions) as session:
            await statements.import_statement(session, FINANCE, data, payouts=world())
    async with resources.sessions() as session:
        assert await count(session, BankStatement) == 0
        assert await count(session, BreakItem) == 0


async def test_only_finance_imports(resources: Resources) -> None:
    with pytest.raises(Forbidden):
        async with unit_of_work(resources.sessions) as session:
            await statements.import_statement(session, AUDITOR, csv_layout.write(STATEMENT))


async def test_lines_stored_before_payouts_are_matched_later(resources: Resources) -> None:
    async with unit_of_work(resources.sessions) as session:
        imported = await statements.import_statement(session, FINANCE, csv_layout.write(STATEMENT))
    async with resources.sessions() as session:
        detail = await statements.statement_detail(session, imported.statement.id)
        assert {ln.match for ln in detail.lines} == {MatchStatus.pending}
        assert await count(session, BreakItem) == 0
    payouts = world()
    async with unit_of_work(resources.sessions) as session:
        assert await statements.match_pending(session, payouts) == 6
    async with unit_of_work(resources.sessions) as session:
        assert await statements.match_pending(session, payouts) == 0  # once
    async with resources.sessions() as session:
        detail = await statements.statement_detail(session, imported.statement.id)
        assert detail.counts == {
            MatchStatus.matched: 1,
            MatchStatus.differs: 3,
            MatchStatus.unmatched: 2,
        }
        assert await count(session, BreakItem) == 5
    assert [r for r, _e in payouts.confirmed] == ["PO-1"]


async def test_the_statement_pages_over_http(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    csrf = await sign_in(client, resources, "fin_statements")
    data = camt053.write(replace(STATEMENT, format=Format.camt053))
    files = {"file": ("statement.xml", data, "application/xml")}
    refused = await client.post("/finance/statements", files=files, data={"format": "auto"})
    assert refused.status_code == 403  # no CSRF token
    assert "CsrfRefused" in refused.text

    answer = await client.post(
        "/finance/statements", files=files, data={"csrf": csrf, "format": "auto"}
    )
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.endswith("?notice=imported")
    shown = await client.get(location)
    assert shown.status_code == 200
    assert "STMT-20261202" in shown.text
    assert shown.text.count('class="match-state"') == 6
    assert "未匹配" in shown.text  # no payout of these references

    again = await client.post(
        "/finance/statements", files=files, data={"csrf": csrf, "format": "camt053"}
    )
    assert again.headers["location"] == location.replace("imported", "replayed")

    broken = {"file": ("s.csv", b"statement_id,account\r\n", "text/csv")}
    bad = await client.post("/finance/statements", files=broken, data={"csrf": csrf})
    assert bad.status_code == 422
    assert "StatementMalformed" in bad.text
    assert "header at line 1" in bad.text
    evil = {
        "file": (
            "s.xml",
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "e">]><x>&e;</x>',
            "text/xml",
        )
    }
    bad = await client.post("/finance/statements", files=evil, data={"csrf": csrf})
    assert bad.status_code == 422
    assert "doctype at line 1" in bad.text

    huge = {"file": ("s.csv", b"x" * (MAX_BYTES + 20 * 1024), "text/csv")}
    too_big = await client.post("/finance/statements", files=huge, data={"csrf": csrf})
    assert too_big.status_code == 413

    listing = await client.get("/finance/statements")
    assert listing.text.count('<tr id="statement-') == 1
    client.cookies.set("cardsvc_lang", "en")
    assert "Unmatched" in (await client.get(location)).text
    assert "Import a statement" in (await client.get("/finance/statements")).text
    client.cookies.set("cardsvc_lang", "zh")
    assert (await client.get("/finance/statements/999")).status_code == 404


async def test_an_auditor_sees_but_does_not_import(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    csrf = await sign_in(client, resources, "aud_statements", Role.auditor)
    listing = await client.get("/finance/statements")
    assert listing.status_code == 200
    assert 'id="upload"' not in listing.text
    files = {"file": ("s.csv", csv_layout.write(STATEMENT), "text/csv")}
    answer = await client.post("/finance/statements", files=files, data={"csrf": csrf})
    assert answer.status_code == 403


async def test_an_import_that_loses_the_race_answers_the_winner(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = csv_layout.write(STATEMENT)
    async with unit_of_work(resources.sessions) as session:
        first = await statements.import_statement(session, FINANCE, data)
    # The second import checked before the first committed: it finds nothing, then its insert
    # meets the stored statement.
    real = statements._imported
    calls: list[int] = []

    async def late(*args: Any) -> statements.Imported | None:
        calls.append(1)
        return None if len(calls) == 1 else await real(*args)

    monkeypatch.setattr(statements, "_imported", late)
    async with unit_of_work(resources.sessions) as session:
        second = await statements.import_statement(session, FINANCE, data)
    assert second.replayed
    assert second.statement.id == first.statement.id
    async with resources.sessions() as session:
        assert await count(session, BankStatement) == 1
        assert await count(session, BankStatementLine) == 6


async def test_matching_the_settlements_payouts(resources: Resources) -> None:
    """A day settled with two paid shops: the bank's statement confirms one payout, shows the
    other for another amount, and a line no payout explains."""
    shops = {"900000000000011": 12000, "900000000000012": 3400}
    async with unit_of_work(resources.sessions) as session:
        day = await clearing.clearing_date(session, resources.settings)
        for n, (merchant_no, amount) in enumerate(shops.items()):
            await registry.create_merchant(
                session, merchant_no=merchant_no, name=f"Shop {n}",
                category=MerchantCategory.retail, settlement_account="6222000055556666",
                actor="test",
            )  # fmt: skip
            await payouts.set_payee(
                session, merchant_no,
                PayeeIn(bank_name="城市银行", bank_branch="东门支行",
                        account_no=f"62220000{n:08d}", account_holder=f"Shop {n}"),
                actor="test",
            )  # fmt: skip
            await ledger.post(
                session,
                PostingRequest(
                    idempotency_key=f"statement-payouts:{n}",
                    tx_type="online_purchase",
                    clearing_date=day,
                    entries=[
                        Entry(AccountRef(AccountKind.bank, "test"), Side.debit, amount),
                        Entry(
                            AccountRef(AccountKind.merchant_pending, merchant_no),
                            Side.credit,
                            amount,
                        ),
                    ],
                ),
            )
    await nightly.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    await payouts.issue_payouts(resources.sessions, resources.settings, day)
    first, second = (payouts.reference(day, m) for m in shops)
    async with resources.sessions() as session:
        waiting = await statements.list_statements(session)
    assert (waiting.unconfirmed_count, waiting.unconfirmed_amount) == (2, 15400)
    assert [p.reference for p in waiting.unconfirmed] == [first, second]
    statement = replace(
        STATEMENT,
        statement_id="PAYOUTS-1",
        lines=[line(1, 12000, first), line(2, 3401, second), line(3, 99, "P-NOT-OURS")],
    )
    async with unit_of_work(resources.sessions) as session:
        imported = await statements.import_statement(
            session, FINANCE, camt053.write(replace(statement, format=Format.camt053)),
            payouts=statements.payouts_port(),
        )  # fmt: skip
    async with resources.sessions() as session:
        detail = await statements.statement_detail(session, imported.statement.id)
        found = {p.merchant_no: p.status for p in await payouts.day_payouts(session, day)}
        confirmations = (
            (
                await session.execute(
                    select(AuditEntry.entity_id).where(AuditEntry.action == "payout.confirm")
                )
            )
            .scalars()
            .all()
        )
    assert [ln.match for ln in detail.lines] == [
        MatchStatus.matched, MatchStatus.differs, MatchStatus.unmatched,
    ]  # fmt: skip
    assert found == {
        "900000000000011": PayoutStatus.confirmed,
        "900000000000012": PayoutStatus.issued,
    }
    assert confirmations == [first]
    assert detail.lines[1].match_detail == f"payout {second} is 3400 fen, the bank 3401"
    async with resources.sessions() as session:
        waiting = await statements.list_statements(session)
    assert (waiting.unconfirmed_count, waiting.unconfirmed_amount) == (1, 3400)
    assert [p.reference for p in waiting.unconfirmed] == [second]


def test_bank_line_breaks_wait_in_bank_suspense() -> None:
    from cardsvc.ledger.models import AccountKind as Kind
    from settlement.resolutions.service import suspense_of

    assert suspense_of(BreakKind.unmatched_bank_line.value) is Kind.suspense_bank
    assert suspense_of(BreakKind.bank_line_differs.value) is Kind.suspense_bank
