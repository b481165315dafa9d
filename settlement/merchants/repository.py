"""All SQL of the merchant statements: merchants found by number or name, and what the nightly
settlement stored for one merchant over a range of clearing dates."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import date

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from settlement.nightly.models import BatchStatus, SettlementBatch, SettlementLine
from terminals.registry.models import Merchant


async def merchants(session: AsyncSession, search: str, limit: int) -> Sequence[Merchant]:
    stmt = select(Merchant).order_by(Merchant.merchant_no).limit(limit)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(
            or_(
                Merchant.merchant_no.like(pattern, escape="\\"),
                Merchant.name.like(pattern, escape="\\"),
            )
        )
    return (await session.execute(stmt)).scalars().all()


async def merchant(session: AsyncSession, merchant_no: str) -> Merchant | None:
    stmt = select(Merchant).where(Merchant.merchant_no == merchant_no)
    return (await session.execute(stmt)).scalar_one_or_none()


async def batches(
    session: AsyncSession, merchant_no: str, first: date, last: date
) -> list[tuple[date, int, int, int, int, BatchStatus]]:
    """(date, count, gross, fee, net, status) of the merchant's batches, oldest first."""
    b = SettlementBatch
    stmt = (
        select(b.clearing_date, b.count, b.gross, b.fee, b.net, b.status)
        .where(b.merchant_no == merchant_no, b.clearing_date >= first, b.clearing_date <= last)
        .order_by(b.clearing_date)
    )
    return [
        (d, int(c), int(g), int(f), int(n), s) for d, c, g, f, n, s in await session.execute(stmt)
    ]


async def lines(
    session: AsyncSession, merchant_no: str, first: date, last: date
) -> AsyncIterator[tuple[date, str, int, int, int]]:
    """(date, class, count, gross, fee) of the merchant's lines, by date then class, streamed."""
    line = SettlementLine
    stmt = (
        select(line.clearing_date, line.tx_class, line.count, line.gross, line.fee)
        .where(
            line.merchant_no == merchant_no,
            line.clearing_date >= first,
            line.clearing_date <= last,
        )
        .order_by(line.clearing_date, line.tx_class)
        .execution_options(yield_per=1000)
    )
    result = await session.stream(stmt)
    async for d, c, n, g, f in result:
        yield d, c, int(n), int(g), int(f)


async def totals(
    session: AsyncSession, merchant_no: str, first: date, last: date
) -> tuple[int, int, int, int, int]:
    """(days, count, gross, fee, net) of the merchant's batches in the range."""
    b = SettlementBatch
    stmt = select(
        func.count(),
        func.coalesce(func.sum(b.count), 0),
        func.coalesce(func.sum(b.gross), 0),
        func.coalesce(func.sum(b.fee), 0),
        func.coalesce(func.sum(b.net), 0),
    ).where(b.merchant_no == merchant_no, b.clearing_date >= first, b.clearing_date <= last)
    days, count, gross, fee, net = (await session.execute(stmt)).one()
    return int(days), int(count), int(gross), int(fee), int(net)
