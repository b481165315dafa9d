"""Billers: the utilities whose bills residents pay (docs/biller-protocol.md, docs/bills.md).

A biller is a registered party: where it answers (endpoint), the HSM label of the key it shares
with us (the key never leaves the HSM), the pattern of its bill keys (户号), where it is paid
(bank details), what it pays us (fee rule), how often (settlement cycle) and whether it is open.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Enum, String
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
