"""Fee rules (docs/fees.md): effective-dated, per merchant, per merchant category or for every
merchant, per transaction class or for every class. The nightly ``fees`` step picks one rule per
settlement line and computes the fee of each record in the database.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, Enum, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc import clock
from cardsvc.db import Base, BigIntPK
from terminals.registry.models import MerchantCategory

# A rate is in units of 1/100000 of the amount (0.01 per mille): 60 is 0.6 per mille, 100000 is
# the whole amount.
RATE_UNITS = 100_000


class FeeRule(Base):
    __tablename__ = "fee_rules"
    __table_args__ = (
        CheckConstraint("merchant_no IS NULL OR category IS NULL", name="one_scope"),
        CheckConstraint(
            "min_fee IS NULL OR max_fee IS NULL OR min_fee <= max_fee", name="min_le_max"
        ),
        CheckConstraint(
            "effective_to IS NULL OR effective_to >= effective_from", name="dates_ordered"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # The scope: a merchant, or a category, or neither (the default of every merchant).
    merchant_no: Mapped[str | None] = mapped_column(String(15), index=True)
    category: Mapped[MerchantCategory | None] = mapped_column(
        Enum(MerchantCategory, native_enum=False, length=16)
    )
    tx_class: Mapped[str | None] = mapped_column(String(32))  # None: every class
    effective_from: Mapped[date] = mapped_column(Date)
    effective_to: Mapped[date | None] = mapped_column(Date)  # the last day it applies
    per_record: Mapped[int] = mapped_column(BigInteger)  # fen per record
    rate: Mapped[int] = mapped_column(Integer)  # of the amount, in 1/RATE_UNITS
    daily: Mapped[int] = mapped_column(BigInteger)  # fen per line and day
    min_fee: Mapped[int | None] = mapped_column(BigInteger)  # per record
    max_fee: Mapped[int | None] = mapped_column(BigInteger)  # per record
    note: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    retired_by: Mapped[str | None] = mapped_column(String(64))
    retired_at: Mapped[datetime | None]


class FeeTier(Base):
    """One amount band of a tiered rule: records of ``amount_from`` <= amount < ``amount_to``
    (no upper bound when null) pay ``rate`` instead of the rule's own."""

    __tablename__ = "fee_rule_tiers"

    rule_id: Mapped[int] = mapped_column(ForeignKey("fee_rules.id"), primary_key=True)
    amount_from: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    amount_to: Mapped[int | None] = mapped_column(BigInteger)
    rate: Mapped[int] = mapped_column(Integer)
