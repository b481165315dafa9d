"""A biller's settlement of one clearing date (docs/bills.md §3).

A bill payment credits ``biller_payable:<code>`` when it succeeds, so what a biller is owed for
day D is already in its payable: the batch records the day's movement of that account (payments
less refunds), the fees of its payments by the biller's fee rule, and what is left to pay.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, CheckConstraint, Date, Enum, String
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base
from settlement.nightly.models import BatchStatus


class BillerBatch(Base):
    """One biller's day: gross (the day's movement of its payable, settlement postings left
    out) = net + fee; settled once (its fee posted), paid once (its payout's reference)."""

    __tablename__ = "biller_batches"
    __table_args__ = (CheckConstraint("gross = net + fee", name="balanced"),)

    clearing_date: Mapped[date] = mapped_column(Date, primary_key=True)
    biller_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)  # payments and refunds of the day
    payments: Mapped[int] = mapped_column(BigInteger)  # of which payments (each charged a fee)
    gross: Mapped[int] = mapped_column(BigInteger)
    fee: Mapped[int] = mapped_column(BigInteger)
    net: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[BatchStatus] = mapped_column(Enum(BatchStatus, native_enum=False, length=16))
    # The day of the due batch whose settlement took this batch's fee (its own day, or for a
    # carried batch the day of the batch that carried it); null until settled.
    settled_on: Mapped[date | None] = mapped_column(Date)
    # The fee posting (payable -> fee income) of that settlement; null when its fee was 0.
    ledger_transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    # The payout that paid this batch's net (settlement_payouts.reference); null until then.
    payout_reference: Mapped[str | None] = mapped_column(String(32), index=True)
