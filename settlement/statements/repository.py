"""All SQL of bank statements: the statement row, its lines (written once, in bulk, with their
match), and the reads of the pages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from settlement.payouts.models import PayeeKind, PayoutStatus, SettlementPayout
from settlement.statements.models import BankStatement, BankStatementLine, MatchStatus


async def by_account_and_id(
    session: AsyncSession, account: str, statement_id: str
) -> BankStatement | None:
    stmt = select(BankStatement).where(
        BankStatement.account == account, BankStatement.statement_id == statement_id
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def by_sha256(session: AsyncSession, sha256: str) -> BankStatement | None:
    stmt = select(BankStatement).where(BankStatement.sha256 == sha256)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get(session: AsyncSession, statement_id: int) -> BankStatement | None:
    return await session.get(BankStatement, statement_id)


async def add(session: AsyncSession, statement: BankStatement) -> BankStatement | None:
    """Insert the statement; None when another transaction stored the same account and id (or
    the same file) first: the caller reads that one."""
    try:
        async with session.begin_nested():
            session.add(statement)
            await session.flush()
    except IntegrityError:
        return None
    return statement


async def insert_lines(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 1000):
        await session.execute(insert(BankStatementLine), list(rows[start : start + 1000]))


async def count_statements(session: AsyncSession) -> int:
    stmt = select(func.count()).select_from(BankStatement)
    return int((await session.execute(stmt)).scalar_one())


async def statements(session: AsyncSession, *, offset: int, limit: int) -> Sequence[BankStatement]:
    stmt = select(BankStatement).order_by(BankStatement.id.desc()).offset(offset).limit(limit)
    return (await session.execute(stmt)).scalars().all()


async def match_counts(
    session: AsyncSession, statement_ids: Sequence[int]
) -> dict[int, dict[MatchStatus, int]]:
    if not statement_ids:
        return {}
    line = BankStatementLine
    stmt = (
        select(line.statement_id, line.match, func.count())
        .where(line.statement_id.in_(list(statement_ids)))
        .group_by(line.statement_id, line.match)
    )
    found: dict[int, dict[MatchStatus, int]] = {}
    for statement_id, match, count in await session.execute(stmt):
        found.setdefault(statement_id, {})[match] = int(count)
    return found


async def lines(
    session: AsyncSession, statement_id: int, *, offset: int, limit: int
) -> Sequence[BankStatementLine]:
    stmt = (
        select(BankStatementLine)
        .where(BankStatementLine.statement_id == statement_id)
        .order_by(BankStatementLine.line_no)
        .offset(offset)
        .limit(limit)
    )
    return (await session.execute(stmt)).scalars().all()


async def pending_lines(session: AsyncSession, limit: int) -> list[dict[str, Any]]:
    """Lines not matched yet (plain rows, locked), oldest first."""
    line = BankStatementLine
    stmt = (
        select(
            line.id, line.statement_id, line.line_no, line.booking_date, line.direction,
            line.amount, line.reference, line.bank_reference,
        )
        .where(line.match == MatchStatus.pending)
        .order_by(line.id)
        .limit(limit)
        .with_for_update()
    )  # fmt: skip
    return [dict(row._mapping) for row in await session.execute(stmt)]


async def set_match(
    session: AsyncSession,
    line_id: int,
    match: MatchStatus,
    detail: str | None,
    break_id: int | None,
) -> None:
    await session.execute(
        update(BankStatementLine)
        .where(BankStatementLine.id == line_id)
        .values(match=match, match_detail=detail, break_id=break_id)
    )


async def unconfirmed_payouts(
    session: AsyncSession, limit: int
) -> tuple[int, int, list[tuple[str, PayeeKind, str, date, int]]]:
    """Issued payouts no statement confirmed yet: (count, amount, the oldest ``limit`` as
    (reference, payee kind, merchant number or biller code, clearing_date, amount))."""
    p = SettlementPayout
    issued = p.status == PayoutStatus.issued
    count, amount = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(p.amount), 0)).where(issued)
        )
    ).one()
    stmt = (
        select(p.reference, p.payee_kind, p.merchant_no, p.clearing_date, p.amount)
        .where(issued)
        .order_by(p.clearing_date, p.reference)
        .limit(limit)
    )
    rows = [(r, k, m, d, int(a)) for r, k, m, d, a in await session.execute(stmt)]
    return int(count), int(amount), rows
