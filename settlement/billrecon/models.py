"""One reconciliation per biller and clearing date (docs/bills.md §11): the file sent, its
totals and the ledger's, each attempt to send it, and the biller's answer."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Date, Enum, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base, BigIntPK


class ReconStatus(StrEnum):
    sending = "sending"  # built and balanced: sent (again) until the biller answers
    agreed = "agreed"  # the biller agrees with every line
    disagreed = "disagreed"  # the biller listed disagreements: one break each
    unbalanced = "unbalanced"  # the file's totals are not the ledger's: never sent, a break


class BillReconciliation(Base):
    __tablename__ = "bill_reconciliations"
    __table_args__ = (
        UniqueConstraint("clearing_date", "biller_code"),
        Index("ix_bill_reconciliations_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    clearing_date: Mapped[date] = mapped_column(Date)
    biller_code: Mapped[str] = mapped_column(String(16))
    status: Mapped[ReconStatus] = mapped_column(Enum(ReconStatus, native_enum=False, length=16))
    file_name: Mapped[str] = mapped_column(String(64))
    file_sha256: Mapped[str] = mapped_column(String(64))
    file_text: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(BigInteger)  # the file's detail lines
    total: Mapped[int] = mapped_column(BigInteger)  # the file's sum: payments - refunds, fen
    # The day's movement of the biller's payable in the ledger, which the file must equal.
    ledger_count: Mapped[int] = mapped_column(BigInteger)
    ledger_total: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int]  # sends so far (the idempotency key of the next is recon:<D>:<n+1>)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(255))
    answer: Mapped[str | None] = mapped_column(Text)  # the biller's answer, as JSON
    disagreements: Mapped[int]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
