"""Bank statement reconciliation (docs/bank-statements.md): import the bank's statement of the
payout account (CSV layout or camt.053), store it with its lines, and match each line to the
payout of its reference: a line of the same amount confirms the payout; any other line opens a
break for finance.

The import is one unit of work: the statement, its lines, the payouts confirmed and the breaks
opened commit together or not at all (a malformed file is refused before anything is written).
The same file again finds the statement it stored and changes nothing.

Payouts belong to another domain; matching reaches them through the :class:`Payouts` port, given
by the caller (:func:`payouts_port`: the settlement's payouts). Without one, lines are stored
``pending`` and matched later (:func:`match_pending`, also run by every import that matches).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.audit import service as audit
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind
from cardsvc.breaks.schemas import BreakRef, NewBreak
from cardsvc.errors import Conflict, NotFound
from cardsvc.staff.auth import Role, StaffPrincipal, check_roles
from settlement.payouts.models import PayeeKind
from settlement.statements import repository
from settlement.statements.models import BankStatement, BankStatementLine, MatchStatus
from settlement.statements.parsing import Direction, Format, ParsedLine, parse
from settlement.statements.payouts import SettlementPayouts
from settlement.statements.ports import Payout, Payouts

__all__ = ["Payout", "Payouts"]

LINES_PAGE: Final = 200
STATEMENTS_PAGE: Final = 50
UNCONFIRMED_SHOWN: Final = 100
BREAK_SOURCE: Final = "bank_statement"
# The payout states a bank line may confirm.
CONFIRMABLE: Final = frozenset({"issued"})


class StatementConflict(Conflict):
    """Another file was imported under this account and statement id: the bank corrects a
    statement with a new id, never by sending other content under the same one."""


def payouts_port() -> Payouts:
    """The payouts adapter matching uses: the settlement's payouts."""
    return SettlementPayouts()


@dataclass(frozen=True, slots=True)
class Imported:
    statement: BankStatement
    replayed: bool  # the same file was imported before: nothing changed


@dataclass(frozen=True, slots=True)
class Outcome:
    match: MatchStatus
    detail: str | None
    break_id: int | None


def _open_key(statement_id: int, line_no: int) -> str:
    return f"bank_line:{statement_id}:{line_no}"


async def _match(
    session: AsyncSession,
    payouts: Payouts,
    statement_id: int,
    lines: Sequence[ParsedLine],
    actor: str,
) -> list[Outcome]:
    """Each line against the payout of its reference, in statement order; a payout confirmed by
    one line is not confirmed again by a later one (that line differs)."""
    references = sorted({ln.reference for ln in lines if ln.reference})
    found = dict(await payouts.find(session, references)) if references else {}
    out = []
    for line in lines:
        payout = found.get(line.reference) if line.reference else None
        evidence = f"bank statement {statement_id} line {line.line_no}"
        if payout is None:
            reason = (
                "a credit on the payout account" if line.direction is Direction.credit
                else f"no payout of reference {line.reference}" if line.reference
                else "a line with no reference"
            )  # fmt: skip
            kind, amount, day = BreakKind.unmatched_bank_line, line.amount, line.booking_date
            match = MatchStatus.unmatched
        elif (
            line.direction is Direction.debit
            and line.amount == payout.amount
            and payout.status in CONFIRMABLE
        ):
            await payouts.confirm(session, payout.reference, evidence=evidence, actor=actor)
            found[payout.reference] = replace(payout, status="confirmed")
            out.append(Outcome(MatchStatus.matched, f"payout {payout.reference} confirmed", None))
            continue
        else:
            if line.direction is Direction.credit:
                reason = f"a credit naming payout {payout.reference}"
            elif line.amount != payout.amount:
                reason = f"payout {payout.reference} is {payout.amount} fen, the bank {line.amount}"
            else:
                reason = f"payout {payout.reference} is {payout.status}, not issued"
            kind, day = BreakKind.bank_line_differs, payout.clearing_date
            amount = abs(line.amount - payout.amount) or line.amount
            match = MatchStatus.differs
        break_id = await breaks.open_break(
            session,
            NewBreak(
                kind=kind,
                clearing_date=day,
                reason=reason[:200],
                ref=BreakRef(
                    source=BREAK_SOURCE,
                    source_id=statement_id,
                    reference=line.reference or line.bank_reference,
                ),
                amount=amount,
                open_key=_open_key(statement_id, line.line_no),
            ),
        )
        out.append(Outcome(match, reason[:200], break_id))
    return out


async def _imported(
    session: AsyncSession, account: str, statement_id: str, sha256: str
) -> Imported | None:
    """The statement already stored under this account and id (the same file: a replay; another
    file: refused), or under this SHA-256."""
    existing = await repository.by_account_and_id(session, account, statement_id)
    if existing is not None:
        if existing.sha256 != sha256:
            raise StatementConflict(
                f"statement {statement_id} of account {account} was imported from another "
                f"file (SHA-256 {existing.sha256}); nothing was stored"
            )
        return Imported(existing, replayed=True)
    same_bytes = await repository.by_sha256(session, sha256)
    return Imported(same_bytes, replayed=True) if same_bytes is not None else None


async def import_statement(
    session: AsyncSession,
    principal: StaffPrincipal,
    data: bytes,
    *,
    format: Format | None = None,
    payouts: Payouts | None = None,
) -> Imported:
    """Import one statement file (checks in the order of docs/bank-statements.md, "Import")."""
    check_roles(principal, (Role.finance,))
    # Up to a second of work for the largest file: not on the event loop, which serves others.
    parsed = await asyncio.to_thread(parse, data, format)
    sha256 = hashlib.sha256(data).hexdigest()
    found = await _imported(session, parsed.account, parsed.statement_id, sha256)
    if found is not None:
        return found
    lines = parsed.lines
    bookings = [ln.booking_date for ln in lines]
    statement = await repository.add(
        session,
        BankStatement(
            account=parsed.account,
            statement_id=parsed.statement_id,
            format=parsed.format,
            sha256=sha256,
            size=len(data),
            currency=parsed.currency,
            opening_balance=parsed.opening_balance,
            closing_balance=parsed.closing_balance,
            line_count=len(lines),
            credits=sum(ln.amount for ln in lines if ln.direction is Direction.credit),
            debits=sum(ln.amount for ln in lines if ln.direction is Direction.debit),
            first_booking=min(bookings, default=None),
            last_booking=max(bookings, default=None),
            imported_by=principal.username,
            imported_at=clock.now(),
        ),
    )
    if statement is None:  # imported meanwhile by another request
        found = await _imported(session, parsed.account, parsed.statement_id, sha256)
        if found is None:  # pragma: no cover - the other import rolled back: try again
            raise StatementConflict("the statement is being imported by another request; retry")
        return found
    if payouts is None:
        outcomes = [Outcome(MatchStatus.pending, None, None)] * len(lines)
    else:
        outcomes = await _match(session, payouts, statement.id, lines, principal.username)
    await repository.insert_lines(
        session, [_line_row(statement.id, ln, o) for ln, o in zip(lines, outcomes, strict=True)]
    )
    if payouts is not None:  # lines an earlier import stored before it could match
        await match_pending(session, payouts)
    counts = {m.value: sum(1 for o in outcomes if o.match is m) for m in MatchStatus}
    await audit.record(
        session,
        actor=principal.username,
        action="bank_statement.import",
        entity="bank_statement",
        entity_id=str(statement.id),
        after={
            "account": parsed.account, "statement_id": parsed.statement_id,
            "format": parsed.format.value, "sha256": sha256, "lines": len(lines), **counts,
        },
    )  # fmt: skip
    return Imported(statement, replayed=False)


def _line_row(statement_id: int, line: ParsedLine, outcome: Outcome) -> dict[str, Any]:
    return {
        "statement_id": statement_id,
        "line_no": line.line_no,
        "booking_date": line.booking_date,
        "value_date": line.value_date,
        "direction": line.direction,
        "amount": line.amount,
        "reference": line.reference,
        "bank_reference": line.bank_reference,
        "counterparty_account": line.counterparty_account,
        "counterparty_name": line.counterparty_name,
        "remittance": line.remittance,
        "match": outcome.match,
        "match_detail": outcome.detail,
        "break_id": outcome.break_id,
    }


MATCHER: Final = "system:statement-match"


async def match_pending(session: AsyncSession, payouts: Payouts, *, limit: int = 5000) -> int:
    """Match lines stored while no payouts were read (oldest first, at most ``limit``); returns
    how many were matched (confirmed or opened as breaks)."""
    rows = await repository.pending_lines(session, limit)
    by_statement: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_statement.setdefault(row["statement_id"], []).append(row)
    for statement_id, group in by_statement.items():
        lines = [
            ParsedLine(
                r["line_no"], r["booking_date"], None, r["direction"], r["amount"],
                r["reference"], r["bank_reference"], None, None, None,
            )
            for r in group
        ]  # fmt: skip
        outcomes = await _match(session, payouts, statement_id, lines, MATCHER)
        for row, outcome in zip(group, outcomes, strict=True):
            await repository.set_match(
                session, row["id"], outcome.match, outcome.detail, outcome.break_id
            )
    return len(rows)


@dataclass(frozen=True, slots=True)
class StatementRow:
    statement: BankStatement
    counts: dict[MatchStatus, int]


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    reference: str
    payee_kind: PayeeKind
    merchant_no: str  # the payee's number: a merchant number or a biller code
    clearing_date: date
    amount: int


@dataclass(frozen=True, slots=True)
class StatementsPage:
    rows: list[StatementRow]
    total: int
    unconfirmed_count: int  # payouts issued that no statement has shown yet
    unconfirmed_amount: int
    unconfirmed: list[Unconfirmed]  # the oldest of them


async def list_statements(session: AsyncSession, *, page: int = 1) -> StatementsPage:
    found = list(
        await repository.statements(
            session, offset=(page - 1) * STATEMENTS_PAGE, limit=STATEMENTS_PAGE
        )
    )
    counts = await repository.match_counts(session, [s.id for s in found])
    waiting, amount, oldest = await repository.unconfirmed_payouts(session, UNCONFIRMED_SHOWN)
    return StatementsPage(
        [StatementRow(s, counts.get(s.id, {})) for s in found],
        await repository.count_statements(session),
        waiting,
        amount,
        [Unconfirmed(*row) for row in oldest],
    )


@dataclass(frozen=True, slots=True)
class StatementDetail:
    statement: BankStatement
    counts: dict[MatchStatus, int]
    lines: list[BankStatementLine]


async def statement_detail(
    session: AsyncSession, statement_id: int, *, page: int = 1
) -> StatementDetail:
    found = await repository.get(session, statement_id)
    if found is None:
        raise NotFound(f"no bank statement {statement_id}")
    counts = await repository.match_counts(session, [statement_id])
    lines = await repository.lines(
        session, statement_id, offset=(page - 1) * LINES_PAGE, limit=LINES_PAGE
    )
    return StatementDetail(found, counts.get(statement_id, {}), list(lines))
