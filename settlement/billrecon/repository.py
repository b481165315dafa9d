"""All SQL of the billers' daily reconciliation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.bills.models import Biller, BillerStatus, BillPayment
from cardsvc.clearing.models import ClearingDay, DayStatus
from settlement.billrecon.files import Line
from settlement.billrecon.models import BillReconciliation, ReconStatus


@dataclass(frozen=True, slots=True)
class DayLine:
    payment_id: int
    line: Line


async def day_lines(session: AsyncSession, code: str, day: date) -> list[DayLine]:
    """The biller's movements of ``day`` in file order: the payments whose success was posted
    on the day (by serial), then the refunds made on the day (by refund serial)."""
    p = BillPayment
    paid = await session.execute(
        select(p.id, p.serial, p.bill_key, p.amount, p.sub_channel, p.receipt_no)
        .where(p.biller_code == code, p.posted_date == day)
        .order_by(p.serial)
    )
    refunded = await session.execute(
        select(p.id, p.refund_serial, p.bill_key, p.amount, p.sub_channel, p.refund_receipt_no)
        .where(p.biller_code == code, p.refund_date == day)
        .order_by(p.refund_serial)
    )
    out = []
    for kind, rows in (("payment", paid), ("refund", refunded)):
        for pid, serial, bill_key, amount, sub_channel, receipt in rows.all():
            line = Line(day, str(serial or ""), bill_key, int(amount), str(sub_channel),
                        kind, receipt or "")  # fmt: skip
            out.append(DayLine(int(pid), line))
    return out


async def payments_by_serial(
    session: AsyncSession, code: str, serials: Sequence[str]
) -> dict[str, tuple[int, str, int]]:
    """(payment id, bill key, amount) of the biller's payments or refunds with these serials."""
    if not serials:
        return {}
    p = BillPayment
    wanted = sorted(set(serials))
    rows = await session.execute(
        select(p.id, p.serial, p.refund_serial, p.bill_key, p.amount).where(
            p.biller_code == code, or_(p.serial.in_(wanted), p.refund_serial.in_(wanted))
        )
    )
    found: dict[str, tuple[int, str, int]] = {}
    for pid, serial, refund_serial, bill_key, amount in rows.all():
        for s in (serial, refund_serial):
            if s in wanted:
                found[str(s)] = (int(pid), str(bill_key), int(amount))
    return found


async def get(
    session: AsyncSession, day: date, code: str, *, for_update: bool = False
) -> BillReconciliation | None:
    r = BillReconciliation
    stmt = select(r).where(r.clearing_date == day, r.biller_code == code)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


def add(session: AsyncSession, row: BillReconciliation) -> None:
    session.add(row)


async def of_day(session: AsyncSession, day: date) -> list[BillReconciliation]:
    r = BillReconciliation
    stmt = select(r).where(r.clearing_date == day).order_by(r.biller_code)
    return list((await session.execute(stmt)).scalars())


async def latest(session: AsyncSession, limit: int) -> list[BillReconciliation]:
    r = BillReconciliation
    stmt = select(r).order_by(r.clearing_date.desc(), r.biller_code).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def to_build(session: AsyncSession, limit: int) -> list[tuple[date, str]]:
    """(day, biller) pairs still without a reconciliation, oldest first: every closed day on
    which the biller was registered (it existed before the day closed, and was not closed for
    good before the day opened)."""
    d, b, r = ClearingDay, Biller, BillReconciliation
    done = exists().where(r.clearing_date == d.clearing_date, r.biller_code == b.code)
    stmt = (
        select(d.clearing_date, b.code)
        .join(b, b.created_at < d.closed_at)
        .where(
            d.status == DayStatus.closed,
            or_(b.status != BillerStatus.closed, b.updated_at > d.opened_at),
            ~done,
        )
        .order_by(d.clearing_date, b.code)
        .limit(limit)
    )
    return [(day, str(code)) for day, code in (await session.execute(stmt)).all()]


async def due(session: AsyncSession, now: datetime, limit: int) -> list[tuple[date, str]]:
    """Reconciliations waiting to be sent (again) whose time has come, oldest first."""
    r = BillReconciliation
    stmt = (
        select(r.clearing_date, r.biller_code)
        .where(
            r.status == ReconStatus.sending,
            and_(r.next_attempt_at.is_not(None), r.next_attempt_at <= now),
        )
        .order_by(r.clearing_date, r.biller_code)
        .limit(limit)
    )
    return [(day, str(code)) for day, code in (await session.execute(stmt)).all()]


async def day_closed(session: AsyncSession, day: date) -> bool:
    stmt = select(ClearingDay.status).where(ClearingDay.clearing_date == day)
    return (await session.execute(stmt)).scalar_one_or_none() is DayStatus.closed
