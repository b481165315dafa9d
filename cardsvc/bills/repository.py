"""SQL of bills: billers, payments and the payments' outbox."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from cardsvc.bills.models import (
    CASH_BACK_STATUSES,
    Biller,
    BillerStatus,
    BillOutbox,
    BillPayment,
    BillPresentment,
    OutboxAction,
    PayerKind,
    PaymentStatus,
)
from cardsvc.pgdirect import Query
from cardsvc.sql import insert_ignore


async def biller_by_code(
    session: AsyncSession, code: str, *, for_update: bool = False
) -> Biller | None:
    stmt = select(Biller).where(Biller.code == code)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def biller_by_id(session: AsyncSession, biller_id: int) -> Biller | None:
    return await session.get(Biller, biller_id)


async def billers(session: AsyncSession, *, status: BillerStatus | None) -> list[Biller]:
    stmt = select(Biller).order_by(Biller.code)
    if status is not None:
        stmt = stmt.where(Biller.status == status)
    return list((await session.execute(stmt)).scalars())


# --- payments -------------------------------------------------------------------------------


async def add_payment(session: AsyncSession, payment: BillPayment) -> BillPayment:
    """Insert the payment and give it its serial (from its id) in the same transaction."""
    session.add(payment)
    await session.flush()
    payment.serial = f"B{payment.id:011d}"
    await session.flush()
    return payment


async def payment_by_id(
    session: AsyncSession, payment_id: int, *, for_update: bool = False
) -> BillPayment | None:
    stmt = select(BillPayment).where(BillPayment.id == payment_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def payment_and_outbox(
    session: AsyncSession, payment_id: int
) -> tuple[BillPayment | None, BillOutbox | None]:
    """The payment and its outbox row, both locked (payment first) in one statement; when the
    payment has no row (it became final), the payment alone, locked."""
    stmt = (
        select(BillPayment, BillOutbox)
        .join(BillOutbox, BillOutbox.payment_id == BillPayment.id)
        .where(BillPayment.id == payment_id)
        .with_for_update()
    )
    found = (await session.execute(stmt)).first()
    if found is not None:
        return found[0], found[1]
    return await payment_by_id(session, payment_id, for_update=True), None


async def payment_by_serial(
    session: AsyncSession, serial: str, *, for_update: bool = False
) -> BillPayment | None:
    stmt = select(BillPayment).where(BillPayment.serial == serial)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def payment_by_submit(session: AsyncSession, scope: str, key: str) -> BillPayment | None:
    stmt = select(BillPayment).where(
        BillPayment.submit_scope == scope, BillPayment.submit_key == key
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def payments_of_resident(
    session: AsyncSession, resident_id: int, *, before_id: int | None, limit: int
) -> list[BillPayment]:
    stmt = select(BillPayment).where(BillPayment.resident_id == resident_id)
    if before_id is not None:
        stmt = stmt.where(BillPayment.id < before_id)
    stmt = stmt.order_by(BillPayment.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def payments_posted_on(
    session: AsyncSession, biller_code: str, day: date
) -> list[BillPayment]:
    """Payments of the biller whose success was posted on ``day`` (paid or refunded since)."""
    stmt = (
        select(BillPayment)
        .where(BillPayment.biller_code == biller_code, BillPayment.posted_date == day)
        .order_by(BillPayment.id)
    )
    return list((await session.execute(stmt)).scalars())


async def payments_refunded_on(
    session: AsyncSession, biller_code: str, day: date
) -> list[BillPayment]:
    stmt = (
        select(BillPayment)
        .where(BillPayment.biller_code == biller_code, BillPayment.refund_date == day)
        .order_by(BillPayment.id)
    )
    return list((await session.execute(stmt)).scalars())


async def unreturned_cash(
    session: AsyncSession, decided_before: datetime, limit: int
) -> list[BillPayment]:
    """Counter payments that did not pay, decided before ``decided_before``, whose cash is still
    in suspense and has not aged yet: oldest first, locked."""
    p = BillPayment
    stmt = (
        select(p)
        .where(
            p.payer_kind == PayerKind.counter_cash,
            p.status.in_(CASH_BACK_STATUSES),
            p.cash_returned_tx_id.is_(None),
            p.cash_aged_at.is_(None),
            p.decided_at < decided_before,
        )
        .order_by(p.decided_at, p.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())


# --- the outbox -----------------------------------------------------------------------------


# The channel the worker listens on (PostgreSQL): a row came due now (cardsvc.jobs.worker).
OUTBOX_CHANNEL = "bill_outbox"
# Run on every accepted payment: straight on the driver (pgdirect).
_NOTIFY = Query(lambda _dialect: text(f"NOTIFY {OUTBOX_CHANNEL}"))


async def add_outbox(
    session: AsyncSession, payment_id: int, action: OutboxAction, at: datetime
) -> None:
    session.add(
        BillOutbox(
            payment_id=payment_id, action=action, attempts=0, next_attempt_at=at,
            created_at=at, updated_at=at,
        )
    )  # fmt: skip
    await session.flush()
    await notify_outbox(session)


async def notify_outbox(session: AsyncSession) -> None:
    """Wake the outbox worker when this transaction commits (PostgreSQL delivers a notification
    only on commit, once per transaction); other engines wait for the worker's interval."""
    if session.get_bind().dialect.name == "postgresql":
        await _NOTIFY.rows(session, {})


async def outbox_of(
    session: AsyncSession, payment_id: int, *, for_update: bool = False
) -> BillOutbox | None:
    stmt = select(BillOutbox).where(BillOutbox.payment_id == payment_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def delete_outbox(session: AsyncSession, payment_id: int) -> None:
    await session.execute(delete(BillOutbox).where(BillOutbox.payment_id == payment_id))


def _leasable(now: datetime) -> ColumnElement[bool]:
    return and_(
        BillOutbox.next_attempt_at <= now,
        or_(BillOutbox.lease_until.is_(None), BillOutbox.lease_until < now),
    )


async def lease_outbox(
    session: AsyncSession, *, now: datetime, owner: str, until: datetime, limit: int
) -> list[int]:
    """Lease up to ``limit`` due rows to ``owner`` until ``until``; their payment ids.

    PostgreSQL skips the rows another worker is leasing (SKIP LOCKED); on every engine the
    guarded update takes only rows whose lease is free, so two workers never lease one row."""
    due = _leasable(now)
    candidates = (
        select(BillOutbox.id)
        .where(due)
        .order_by(BillOutbox.next_attempt_at, BillOutbox.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list((await session.execute(candidates)).scalars())
    if not ids:
        return []
    leased = await session.execute(
        update(BillOutbox)
        .where(BillOutbox.id.in_(ids), due)
        .values(lease_owner=owner, lease_until=until)
        .returning(BillOutbox.payment_id)
        .execution_options(synchronize_session=False)
    )
    return list(leased.scalars())


async def leased_rows(
    session: AsyncSession, payment_ids: list[int]
) -> list[tuple[BillPayment, BillOutbox, Biller]]:
    """The outbox rows of these payments with their payments and billers, by payment id (one
    statement)."""
    stmt = (
        select(BillPayment, BillOutbox, Biller)
        .join(BillOutbox, BillOutbox.payment_id == BillPayment.id)
        .join(Biller, Biller.id == BillPayment.biller_id)
        .where(BillPayment.id.in_(payment_ids))
        .order_by(BillPayment.id)
    )
    return [(p, row, biller) for p, row, biller in (await session.execute(stmt)).all()]


async def outbox_depth(session: AsyncSession) -> tuple[int, datetime | None]:
    """Rows in the outbox and the creation time of the oldest."""
    row = (
        await session.execute(select(func.count(BillOutbox.id), func.min(BillOutbox.created_at)))
    ).one()
    oldest: datetime | None = row[1]
    return int(row[0]), oldest


async def in_flight(session: AsyncSession) -> list[BillPayment]:
    stmt = select(BillPayment).where(
        BillPayment.status.not_in(
            [PaymentStatus.paid, PaymentStatus.failed, PaymentStatus.reversed,
             PaymentStatus.refunded]
        )
    )  # fmt: skip
    return list((await session.execute(stmt)).scalars())


# --- presentments ---------------------------------------------------------------------------


async def keep_presentment(session: AsyncSession, values: dict[str, object]) -> None:
    """Keep a presentment; a reference the biller presented again is kept once."""
    await insert_ignore(session, BillPresentment.__table__, values)


async def presentment(
    session: AsyncSession, biller_code: str, reference: str
) -> BillPresentment | None:
    stmt = select(BillPresentment).where(
        BillPresentment.biller_code == biller_code, BillPresentment.reference == reference
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def live_payment_of(
    session: AsyncSession, biller_code: str, reference: str
) -> BillPayment | None:
    """A payment of this presentment that is in flight or paid (not failed, reversed or
    refunded)."""
    stmt = (
        select(BillPayment)
        .where(
            BillPayment.biller_code == biller_code,
            BillPayment.reference == reference,
            BillPayment.status.not_in(
                [PaymentStatus.failed, PaymentStatus.reversed, PaymentStatus.refunded]
            ),
        )
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def payment_count(session: AsyncSession, biller_code: str) -> int:
    stmt = select(func.count(BillPayment.id)).where(BillPayment.biller_code == biller_code)
    return int((await session.execute(stmt)).scalar_one())
