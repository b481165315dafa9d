"""Bank credits: money a bank received for a resident's online account (docs/bank-credits.md).

One row per (bank, bank reference): the bank's own unique reference of the credit is the retry
key, whether it came as a notification or as a line of a credit file, so a credit is booked once.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Date, Enum, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base, BigIntPK


class CreditSource(StrEnum):
    notification = "notification"
    file = "file"


class CreditStatus(StrEnum):
    posted = "posted"  # matched an account: bank → the account
    suspense = "suspense"  # matched none: bank → suspense, a break is open
    assigned = "assigned"  # from suspense to an account, by two people of finance


class BankCredit(Base):
    __tablename__ = "bank_credits"
    __table_args__ = (
        UniqueConstraint("bank_code", "bank_reference"),
        CheckConstraint("amount > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    bank_code: Mapped[str] = mapped_column(String(16))
    bank_reference: Mapped[str] = mapped_column(String(35))
    request_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[CreditSource] = mapped_column(Enum(CreditSource, native_enum=False, length=16))
    # What the payer wrote as the account reference, as the bank sent it.
    account_reference_given: Mapped[str] = mapped_column(String(40))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("online_accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    value_date: Mapped[date] = mapped_column(Date)
    payer_masked: Mapped[str] = mapped_column(String(64))
    status: Mapped[CreditStatus] = mapped_column(
        Enum(CreditStatus, native_enum=False, length=16), index=True
    )
    # The postings and the clearing date are indexed for the nightly check of the day's money
    # (the credits of a day, the credit behind each funding posting of a day).
    ledger_transaction_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    break_id: Mapped[int | None] = mapped_column(BigInteger)
    # Moving a suspense credit to an account: one person proposes, another approves.
    proposed_account_id: Mapped[int | None] = mapped_column(ForeignKey("online_accounts.id"))
    proposed_by: Mapped[str | None] = mapped_column(String(64))
    assigned_by: Mapped[str | None] = mapped_column(String(64))
    assign_transaction_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    clearing_date: Mapped[date] = mapped_column(Date, index=True)
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
