"""Merchant statements (docs/finance-pages.md, "Merchant statements"): what one merchant was
settled over a period of clearing dates, per day (its batch) and per transaction class, with the
period's totals; the same rows for a CSV export. Read only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.errors import NotFound, ValidationFailed
from settlement.merchants import repository
from settlement.nightly import service as nightly
from settlement.nightly.models import BatchStatus

MAX_DAYS: Final = 366  # the longest period of one statement
SEARCH_LIMIT: Final = 100


@dataclass(frozen=True, slots=True)
class MerchantRow:
    merchant_no: str
    name: str
    category: str
    status: str


async def find_merchants(session: AsyncSession, search: str = "") -> list[MerchantRow]:
    """Merchants whose number or name holds ``search`` (all when empty), at most 100, by number."""
    found = await repository.merchants(session, search, SEARCH_LIMIT)
    return [MerchantRow(m.merchant_no, m.name, m.category.value, m.status.value) for m in found]


@dataclass(frozen=True, slots=True)
class SettledDay:
    clearing_date: date
    count: int
    gross: int
    fee: int
    net: int
    status: BatchStatus
    lines: list[nightly.ClassLine] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Statement:
    merchant: MerchantRow
    first: date
    last: date
    days: list[SettledDay]
    count: int
    gross: int
    fee: int
    net: int


def period(first: date | None, last: date | None, today: date) -> tuple[date, date]:
    """The period asked for: both ends included, at most :data:`MAX_DAYS` long; by default the
    30 days up to ``today``."""
    last = last or today
    first = first or last - timedelta(days=29)
    if first > last:
        raise ValidationFailed("the period's start is after its end")
    if (last - first).days + 1 > MAX_DAYS:
        raise ValidationFailed(f"a statement covers at most {MAX_DAYS} days")
    return first, last


async def merchant_of(session: AsyncSession, merchant_no: str) -> MerchantRow:
    found = await repository.merchant(session, merchant_no)
    if found is None:
        raise NotFound(f"no merchant {merchant_no}")
    return MerchantRow(found.merchant_no, found.name, found.category.value, found.status.value)


async def statement(session: AsyncSession, merchant_no: str, first: date, last: date) -> Statement:
    merchant = await merchant_of(session, merchant_no)
    days = {
        d: SettledDay(d, c, g, f, n, s)
        for d, c, g, f, n, s in await repository.batches(session, merchant_no, first, last)
    }
    async for d, tx_class, count, gross, fee in repository.lines(session, merchant_no, first, last):
        if d in days:
            days[d].lines.append(nightly.ClassLine(tx_class, count, gross, fee))
    _days, count, gross, fee, net = await repository.totals(session, merchant_no, first, last)
    return Statement(merchant, first, last, list(days.values()), count, gross, fee, net)


@dataclass(frozen=True, slots=True)
class ExportRow:
    clearing_date: date
    tx_class: str
    count: int
    gross: int
    fee: int
    batch_status: BatchStatus | None


async def export_rows(
    session: AsyncSession, merchant_no: str, first: date, last: date
) -> tuple[MerchantRow, AsyncIterator[ExportRow]]:
    """The merchant, and its lines over the period (date, then class) with each day's batch
    status, streamed."""
    merchant = await merchant_of(session, merchant_no)
    status = {
        d: s for d, _c, _g, _f, _n, s in await repository.batches(session, merchant_no, first, last)
    }

    async def rows() -> AsyncIterator[ExportRow]:
        async for d, tx_class, count, gross, fee in repository.lines(
            session, merchant_no, first, last
        ):
            yield ExportRow(d, tx_class, count, gross, fee, status.get(d))

    return merchant, rows()
