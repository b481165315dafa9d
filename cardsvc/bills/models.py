"""Billers: the utilities whose bills residents pay (docs/biller-protocol.md, docs/bills.md).

A biller is a registered party: where it answers (endpoint), the HSM label of the key it shares
with us (the key never leaves the HSM), the pattern of its bill keys (户号), where it is paid
(bank details), what it pays us (fee rule), how often (settlement cycle) and whether it is open.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    Enum,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base, BigIntPK


class BillerCategory(StrEnum):
    water = "water"
    electricity = "electricity"
    gas = "gas"
    heating = "heating"
    telephone = "telephone"


class SettlementCycle(StrEnum):
    daily = "daily"  # every business day
    weekly = "weekly"  # the business days of a week, settled after its Sunday
    monthly = "monthly"  # the business days of a month, settled after its last day


class BillerStatus(StrEnum):
    active = "active"  # bills are queried and paid
    suspended = "suspended"  # no new query or payment; payments in flight still finish
    closed = "closed"  # for good: no new query or payment


class Biller(Base):
    __tablename__ = "billers"
    __table_args__ = (
        CheckConstraint("fee_fixed >= 0", name="fee_fixed_not_negative"),
        CheckConstraint("fee_bps >= 0 AND fee_bps <= 10000", name="fee_bps_range"),
        CheckConstraint("fee_max >= 0", name="fee_max_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    category: Mapped[BillerCategory] = mapped_column(
        Enum(BillerCategory, native_enum=False, length=16)
    )
    endpoint: Mapped[str] = mapped_column(String(200))
    key_label: Mapped[str] = mapped_column(String(40))
    bill_key_pattern: Mapped[str] = mapped_column(String(64))
    bank_name: Mapped[str] = mapped_column(String(64))
    bank_account_no: Mapped[str] = mapped_column(String(34))
    bank_account_name: Mapped[str] = mapped_column(String(64))
    # Our fee per payment, deducted when the biller is settled: fee_fixed + amount × fee_bps /
    # 10 000 (rounded down), at most fee_max (0: no cap).
    fee_fixed: Mapped[int] = mapped_column(default=0)
    fee_bps: Mapped[int] = mapped_column(default=0)
    fee_max: Mapped[int] = mapped_column(default=0)
    settlement_cycle: Mapped[SettlementCycle] = mapped_column(
        Enum(SettlementCycle, native_enum=False, length=16)
    )
    status: Mapped[BillerStatus] = mapped_column(
        Enum(BillerStatus, native_enum=False, length=16), default=BillerStatus.active
    )
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SubChannel(StrEnum):
    online = "online"  # the resident's online account, through self-service
    kiosk = "kiosk"  # the online account, with the card and its PIN at a kiosk terminal
    counter = "counter"  # cash at a service counter


class PayerKind(StrEnum):
    resident_account = "resident_account"  # online and kiosk: a hold on the resident's account
    counter_cash = "counter_cash"  # cash taken into the counter's drawer


class PaymentStatus(StrEnum):
    """The payment's state (docs/bills.md §4). The first five are in flight: the money is held,
    the payment has an outbox row, and the resident sees ``pending``."""

    pending = "pending"  # held and committed; not yet sent to the biller
    unknown = "unknown"  # sent; no trustworthy answer yet (timeout, lost, 5xx, bad signature)
    biller_pending = "biller_pending"  # the biller answered pending: it decides within 24 h
    reversing = "reversing"  # a reversal is being sent (the same business day)
    refunding = "refunding"  # a refund is being sent (after the day cut)
    paid = "paid"  # the biller's success: the hold is posted to the biller's payable
    failed = "failed"  # the biller's failure: the hold is voided
    reversed = "reversed"  # undone by a reversal (or never happened): the hold is voided
    refunded = "refunded"  # undone by a refund after the cut: paid, then refunded
    # The biller's success (or refund) came after the hold had run out: nothing was taken, and
    # a break tells finance (docs/bills.md §3.3).
    expired = "expired"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def visible(self) -> str:
        """What the resident and the counter are shown."""
        return "pending" if self not in FINAL_STATUSES else self.value


FINAL_STATUSES = frozenset(
    {
        PaymentStatus.paid,
        PaymentStatus.failed,
        PaymentStatus.reversed,
        PaymentStatus.refunded,
        PaymentStatus.expired,
    }
)


# A counter payment in one of these states did not pay: its cash is handed back at the counter.
CASH_BACK_STATUSES = frozenset(
    {PaymentStatus.failed, PaymentStatus.reversed, PaymentStatus.refunded}
)


class OutboxAction(StrEnum):
    pay = "pay"  # send the payment
    status = "status"  # ask its status (unknown or pending outcome)
    reverse = "reverse"  # send a reversal
    refund = "refund"  # send a refund


class BillPayment(Base):
    """One payment of one presentment. Its ``serial`` is its identity towards the biller
    (``B`` and the payment's id in 11 digits); ``submit_scope`` + ``submit_key`` are the
    idempotency key of the submission that made it."""

    __tablename__ = "bill_payments"
    __table_args__ = (
        UniqueConstraint("submit_scope", "submit_key"),
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_bill_payments_biller_date", "biller_code", "clearing_date"),
        Index("ix_bill_payments_biller_posted", "biller_code", "posted_date"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    serial: Mapped[str | None] = mapped_column(String(32), unique=True)
    sub_channel: Mapped[SubChannel] = mapped_column(Enum(SubChannel, native_enum=False, length=16))
    biller_id: Mapped[int] = mapped_column(ForeignKey("billers.id"))
    biller_code: Mapped[str] = mapped_column(String(16))
    bill_key: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(64))  # the presentment's, echoed to the biller
    bill_id: Mapped[str] = mapped_column(String(64))
    period: Mapped[str | None] = mapped_column(String(6))
    amount_due: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    payer_kind: Mapped[PayerKind] = mapped_column(Enum(PayerKind, native_enum=False, length=16))
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("residents.id"), index=True)
    card_no: Mapped[str | None] = mapped_column(String(16))  # kiosk: the card whose PIN paid
    terminal_no: Mapped[str | None] = mapped_column(String(16))  # kiosk: the terminal
    counter_code: Mapped[str | None] = mapped_column(String(16))  # counter: the cash drawer
    operator: Mapped[str | None] = mapped_column(String(64))  # counter: the staff member
    hold_id: Mapped[int | None] = mapped_column(BigInteger)
    cash_tx_id: Mapped[int | None] = mapped_column(BigInteger)  # counter: cash into suspense
    # The clearing date open when the payment was accepted: the protocol's ``date`` (§4).
    clearing_date: Mapped[date] = mapped_column(Date)
    paid_at: Mapped[datetime]  # when the money was held (the protocol's ``paid_at``)
    status: Mapped[PaymentStatus] = mapped_column(
        Enum(PaymentStatus, native_enum=False, length=16), index=True
    )
    receipt_no: Mapped[str | None] = mapped_column(String(64))  # the biller's, on success
    reason: Mapped[str | None] = mapped_column(String(32))  # failure or reversal reason
    detail: Mapped[str | None] = mapped_column(String(255))
    pay_tx_id: Mapped[int | None] = mapped_column(BigInteger)  # the hold's posting
    posted_date: Mapped[date | None] = mapped_column(Date)  # its clearing date
    refund_serial: Mapped[str | None] = mapped_column(String(32), unique=True)
    refund_receipt_no: Mapped[str | None] = mapped_column(String(64))
    refund_tx_id: Mapped[int | None] = mapped_column(BigInteger)
    refund_date: Mapped[date | None] = mapped_column(Date)  # the refund's clearing date
    cash_returned_tx_id: Mapped[int | None] = mapped_column(BigInteger)  # counter: cash back
    cash_returned_at: Mapped[datetime | None]
    # Counter cash not handed back in time: when it opened its break (docs/bills.md §5).
    cash_aged_at: Mapped[datetime | None]
    submit_scope: Mapped[str] = mapped_column(String(40))
    submit_key: Mapped[str] = mapped_column(String(96))
    request_hash: Mapped[str] = mapped_column(String(64))
    first_sent_at: Mapped[datetime | None]  # the first payment request (the 15 minutes)
    biller_pending_at: Mapped[datetime | None]  # the biller's pending answer (the 24 hours)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]  # when it became final


class BillOutbox(Base):
    """What is still to be sent to a biller for a payment in flight: one row per payment,
    its ``action`` moving on as the payment does, removed when the payment is final. A worker
    leases a row (``lease_owner`` until ``lease_until``) before it calls the biller, with no
    database transaction open during the call."""

    __tablename__ = "bill_outbox"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("bill_payments.id"), unique=True)
    action: Mapped[OutboxAction] = mapped_column(Enum(OutboxAction, native_enum=False, length=16))
    attempts: Mapped[int] = mapped_column(default=0)  # of this action
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class BillPresentment(Base):
    """A biller's answer to a query (docs/biller-protocol.md §3), kept so that a payment takes
    the amount due and the bill from the biller, not from the client."""

    __tablename__ = "bill_presentments"
    __table_args__ = (UniqueConstraint("biller_code", "reference"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    biller_code: Mapped[str] = mapped_column(String(16))
    bill_key: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(64))
    bill_id: Mapped[str] = mapped_column(String(64))
    holder_masked: Mapped[str] = mapped_column(String(32))
    amount_due: Mapped[int] = mapped_column(BigInteger)
    late_fee: Mapped[int] = mapped_column(BigInteger)
    period: Mapped[str | None] = mapped_column(String(6))
    due_date: Mapped[date | None] = mapped_column(Date)
    partial_allowed: Mapped[bool]
    min_amount: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]
