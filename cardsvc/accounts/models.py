"""The resident's online account (DESIGN §15): its reference, its PIN verification data, and the
cash moved in and out of it at counters.

The money itself is in the ledger (``resident_account:<resident id>``); this row is what a bank,
a counter and the resident name it by, and what verifies the cardholder's PIN. The PIN is never
stored: ``pin_offset`` is the IBM 3624 offset the HSM computed (hsm_sim/pin.py), useless without
the PIN verification key, which never leaves the HSM.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Date, Enum, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base, BigIntPK


class OnlineAccount(Base):
    __tablename__ = "online_accounts"
    __table_args__ = (CheckConstraint("pin_failures >= 0", name="pin_failures_not_negative"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id"), unique=True)
    # 14 digits (cardsvc/accounts/reference.py); set right after the row gets its id.
    reference: Mapped[str | None] = mapped_column(String(14), unique=True)
    pin_offset: Mapped[str | None] = mapped_column(String(12))
    pin_pvk_version: Mapped[int | None]
    pin_set_at: Mapped[datetime | None]
    # Wrong PINs in a row; at CARDSVC_PIN_MAX_FAILURES the PIN is locked (debits refused) until a
    # counter resets it. ``pin_locked_at`` says when that happened.
    pin_failures: Mapped[int] = mapped_column(default=0)
    pin_locked_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class MovementKind(StrEnum):
    deposit = "deposit"  # cash paid in at a counter
    withdrawal = "withdrawal"  # cash paid out at a counter


class MovementStatus(StrEnum):
    posted = "posted"  # the money moved
    awaiting_approval = "awaiting_approval"  # a withdrawal above the limit: held, not yet paid
    rejected = "rejected"  # the supervisor refused it; the hold was released
    expired = "expired"  # nobody approved it in time; the hold was released


class AccountMovement(Base):
    """One cash deposit or withdrawal at a counter, named by the counter's receipt number: the
    same receipt is the same movement (a retry returns it; other content is a conflict)."""

    __tablename__ = "account_movements"
    __table_args__ = (
        UniqueConstraint("kind", "counter_code", "receipt_no"),
        CheckConstraint("amount > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kind: Mapped[MovementKind] = mapped_column(Enum(MovementKind, native_enum=False, length=16))
    account_id: Mapped[int] = mapped_column(ForeignKey("online_accounts.id"), index=True)
    counter_code: Mapped[str] = mapped_column(String(16))
    receipt_no: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[MovementStatus] = mapped_column(
        Enum(MovementStatus, native_enum=False, length=24)
    )
    card_no: Mapped[str | None] = mapped_column(String(16))  # withdrawal: the card whose PIN
    operator: Mapped[str] = mapped_column(String(64))
    approver: Mapped[str | None] = mapped_column(String(64))
    hold_id: Mapped[int | None] = mapped_column(BigInteger)
    # Both indexed for the nightly check of the day's money, which reads the movements of a day
    # and the movement behind each funding posting of a day.
    ledger_transaction_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    clearing_date: Mapped[date] = mapped_column(Date, index=True)
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
