"""Where and when merchants are paid (docs/payouts.md): each merchant's settlement cycle and bank
details, and the payouts of each day.

Both are settlement's own tables keyed by merchant number: the registry (``terminals``) knows who
a merchant is; how and where it is paid is settlement's business, changed by finance, and a payout
keeps a snapshot of the bank details it was paid to.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Date, Enum, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc import clock
from cardsvc.db import Base, BigIntPK


class Cycle(StrEnum):
    daily = "daily"  # every clearing date
    weekly = "weekly"  # cycle_day = ISO weekday, 1 (Monday) to 7 (Sunday)
    monthly = "monthly"  # cycle_day = 1 to 31; past the month's end: its last day


class PayeeKind(StrEnum):
    merchant = "merchant"  # merchant_no is a merchant number; details from settlement_payees
    biller = "biller"  # merchant_no is a biller code; details from the billers' registry


class PayoutStatus(StrEnum):
    held = "held"  # no bank details: nothing paid, the batches wait for the next payout
    due = "due"  # in the day's bank file, not yet posted
    issued = "issued"  # the bank file was issued: payable -> bank posted
    confirmed = "confirmed"  # matched on the bank's statement


class SettlementPayee(Base):
    __tablename__ = "settlement_payees"
    __table_args__ = (
        CheckConstraint(
            "(cycle = 'daily' AND cycle_day IS NULL)"
            " OR (cycle = 'weekly' AND cycle_day BETWEEN 1 AND 7)"
            " OR (cycle = 'monthly' AND cycle_day BETWEEN 1 AND 31)",
            name="cycle_day",
        ),
    )

    merchant_no: Mapped[str] = mapped_column(String(15), primary_key=True)
    cycle: Mapped[Cycle] = mapped_column(Enum(Cycle, native_enum=False, length=16))
    cycle_day: Mapped[int | None]
    bank_name: Mapped[str | None] = mapped_column(String(60))
    bank_branch: Mapped[str | None] = mapped_column(String(60))
    account_no: Mapped[str | None] = mapped_column(String(34))
    account_holder: Mapped[str | None] = mapped_column(String(100))
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=clock.now)


class SettlementPayout(Base):
    __tablename__ = "settlement_payouts"
    __table_args__ = (
        UniqueConstraint(
            "clearing_date", "payee_kind", "merchant_no", name="uq_settlement_payouts_day_payee"
        ),
        CheckConstraint("amount > 0", name="positive"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    clearing_date: Mapped[date] = mapped_column(Date, index=True)  # the payout date
    payee_kind: Mapped[PayeeKind] = mapped_column(Enum(PayeeKind, native_enum=False, length=16))
    # The payee's number: a merchant number, or a biller code when payee_kind is biller.
    merchant_no: Mapped[str] = mapped_column(String(16))
    # P<YYYYMMDD><merchant_no> for a merchant, B<YYYYMMDD><biller code> for a biller.
    reference: Mapped[str] = mapped_column(String(32), unique=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    bank_name: Mapped[str | None] = mapped_column(String(60))
    bank_branch: Mapped[str | None] = mapped_column(String(60))
    account_no: Mapped[str | None] = mapped_column(String(34))
    account_holder: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[PayoutStatus] = mapped_column(Enum(PayoutStatus, native_enum=False, length=16))
    ledger_transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    issued_at: Mapped[datetime | None]
    confirmed_at: Mapped[datetime | None]
