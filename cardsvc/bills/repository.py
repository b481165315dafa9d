"""SQL of bills: billers, payments and the payments' outbox."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
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
from cardsvc.sql import dialect_insert

_billers: Table = Biller.__table__  # type: ignore[assignment]
_payments: Table = BillPayment.__table__  # type: ignore[assignment]
_outbox: Table = BillOutbox.__table__  # type: ignore[assignment]
_presentments: Table = BillPresentment.__table__  # type: ignore[assignment]


async def biller_by_code(
    session: AsyncSession, code: str, *, for_update: bool = False
) -> Biller | None:
    stmt = select(Biller).where(Biller.code == code)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class BillerEntry:
    """What a bill query needs of a biller: whether it is open, where it answers, its key, the
    pattern of its bill keys."""

    code: str
    status: BillerStatus
    endpoint: str
    key_label: str
    bill_key_pattern: str


# Read on every bill query (pgdirect: straight on the driver on PostgreSQL).
_BILLER_ENTRY = Query(
    lambda _dialect: select(
        _billers.c.code,
        _billers.c.status,
        _billers.c.endpoint,
        _billers.c.key_label,
        _billers.c.bill_key_pattern,
    ).where(_billers.c.code == bindparam("b_code", type_=_billers.c.code.type))
)


async def biller_entry(session: AsyncSession, code: str) -> BillerEntry | None:
    row = await _BILLER_ENTRY.first(session, {"b_code": code})
    if row is None:
        return None
    return BillerEntry(str(row[0]), BillerStatus(row[1]), str(row[2]), str(row[3]), str(row[4]))


async def biller_by_id(session: AsyncSession, biller_id: int) -> Biller | None:
    return await session.get(Biller, biller_id)


async def billers(session: AsyncSession, *, status: BillerStatus | None) -> list[Biller]:
    stmt = select(Biller).order_by(Biller.code)
    if status is not None:
        stmt = stmt.where(Biller.status == status)
    return list((await session.execute(stmt)).scalars())


# --- payments -------------------------------------------------------------------------------


def serial_of(payment_id: int) -> str:
    """The payment's serial: ``B`` and its id in 11 digits."""
    return f"B{payment_id:011d}"


# The columns a submission writes (every other column starts empty).
_SUBMITTED = (
    "sub_channel", "biller_id", "biller_code", "bill_key", "reference", "bill_id", "period",
    "amount_due", "amount", "payer_kind", "resident_id", "card_no", "terminal_no",
    "counter_code", "operator", "clearing_date", "paid_at", "status", "submit_scope",
    "submit_key", "request_hash", "created_at", "updated_at",
)  # fmt: skip


def _submitted_binds() -> list[Any]:
    return [bindparam(f"b_{name}", type_=_payments.c[name].type) for name in _SUBMITTED]


def _insert_payment(dialect: str) -> Any:
    """The payment's row unless its submission key exists, returning its id. On PostgreSQL one
    statement takes the id from the sequence and writes the serial with it."""
    if dialect != "postgresql":
        return (
            sqlite.insert(_payments)
            .values(dict(zip(_SUBMITTED, _submitted_binds(), strict=True)))
            .on_conflict_do_nothing(index_elements=["submit_scope", "submit_key"])
            .returning(_payments.c.id)
        )
    n = select(
        func.nextval(func.pg_get_serial_sequence("bill_payments", "id")).label("id")
    ).subquery("n")
    digits = cast(n.c.id, Text)
    serial = literal("B") + case(
        (n.c.id < 10**11, func.lpad(digits, 11, "0")), else_=digits
    )  # as serial_of
    return (
        postgresql.insert(_payments)
        .from_select(
            ["id", "serial", *_SUBMITTED],
            select(cast(n.c.id, BigInteger), serial, *_submitted_binds()),
        )
        .on_conflict_do_nothing(index_elements=["submit_scope", "submit_key"])
        .returning(_payments.c.id)
    )


# Written on every accepted payment (pgdirect: straight on the driver on PostgreSQL).
_INSERT_PAYMENT = Query(_insert_payment)
_SET_SERIAL = Query(
    lambda _dialect: (
        update(_payments)
        .where(_payments.c.id == bindparam("b_id", type_=BigInteger()))
        .values(serial=bindparam("b_serial", type_=_payments.c.serial.type))
    )
)


async def insert_payment(session: AsyncSession, **values: Any) -> BillPayment | None:
    """Insert the payment with its serial (from its id), unless a payment of its submission key
    (``submit_scope``, ``submit_key``) exists: None then, nothing written. The payment returned
    is in the session, as if loaded: what changes on it is flushed."""
    params = {f"b_{name}": values.get(name) for name in _SUBMITTED}
    row = await _INSERT_PAYMENT.first(session, params)
    if row is None:
        return None
    payment_id = int(row[0])
    serial = serial_of(payment_id)
    if session.get_bind().dialect.name != "postgresql":
        await _SET_SERIAL.rows(session, {"b_id": payment_id, "b_serial": serial})
    state: dict[str, Any] = {column.key: None for column in _payments.columns}
    state.update({name: values.get(name) for name in _SUBMITTED}, id=payment_id, serial=serial)
    payment = BillPayment(**state)
    make_transient_to_detached(payment)
    session.add(payment)
    return payment


async def payment_by_id(
    session: AsyncSession, payment_id: int, *, for_update: bool = False
) -> BillPayment | None:
    stmt = select(BillPayment).where(BillPayment.id == payment_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def payments_and_outboxes(
    session: AsyncSession, payment_ids: list[int]
) -> dict[int, tuple[BillPayment, BillOutbox | None]]:
    """The payments and their outbox rows, all locked in payment id order (each payment before
    its row), by payment id; a payment with no row (it became final) is read and locked alone."""
    stmt = (
        select(BillPayment, BillOutbox)
        .join(BillOutbox, BillOutbox.payment_id == BillPayment.id)
        .where(BillPayment.id.in_(payment_ids))
        .order_by(BillPayment.id)
        .with_for_update()
    )
    found: dict[int, tuple[BillPayment, BillOutbox | None]] = {
        payment.id: (payment, row) for payment, row in (await session.execute(stmt)).all()
    }
    rest = [i for i in payment_ids if i not in found]
    if rest:
        alone = (
            select(BillPayment)
            .where(BillPayment.id.in_(rest))
            .order_by(BillPayment.id)
            .with_for_update()
        )
        for payment in (await session.execute(alone)).scalars():
            found[payment.id] = (payment, None)
    return found


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


def _add_outbox(dialect: str) -> Any:
    """A payment's first outbox row, due at once; on PostgreSQL the same statement notifies the
    worker (delivered at commit)."""
    at = bindparam("b_at", type_=_outbox.c.next_attempt_at.type)
    row = insert(_outbox).values(
        payment_id=bindparam("b_payment_id", type_=BigInteger()),
        action=bindparam("b_action", type_=_outbox.c.action.type),
        attempts=0,
        next_attempt_at=at,
        created_at=at,
        updated_at=at,
    )
    if dialect != "postgresql":
        return row
    added = row.cte("added")
    return select(func.pg_notify(OUTBOX_CHANNEL, "")).add_cte(added)


# Written on every accepted payment (pgdirect: straight on the driver on PostgreSQL).
_ADD_OUTBOX = Query(_add_outbox)


async def add_outbox(
    session: AsyncSession, payment_id: int, action: OutboxAction, at: datetime
) -> None:
    """The payment's outbox row, due at ``at``, and the worker woken when this transaction
    commits (on PostgreSQL: :func:`notify_outbox`)."""
    await _ADD_OUTBOX.rows(session, {"b_payment_id": payment_id, "b_action": action, "b_at": at})


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


_PRESENTMENT_COLUMNS = (
    "biller_code", "bill_key", "reference", "bill_id", "holder_masked", "amount_due", "late_fee",
    "period", "due_date", "partial_allowed", "min_amount", "expires_at", "created_at",
)  # fmt: skip
# Written on every bill query (pgdirect: straight on the driver on PostgreSQL).
_KEEP_PRESENTMENT = Query(
    lambda dialect: (
        dialect_insert(dialect, _presentments)
        .values(
            {
                name: bindparam(f"b_{name}", type_=_presentments.c[name].type)
                for name in _PRESENTMENT_COLUMNS
            }
        )
        .on_conflict_do_nothing()
    )
)


async def keep_presentment(session: AsyncSession, values: dict[str, object]) -> None:
    """Keep a presentment; a reference the biller presented again is kept once."""
    await _KEEP_PRESENTMENT.rows(
        session, {f"b_{name}": values[name] for name in _PRESENTMENT_COLUMNS}
    )


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
