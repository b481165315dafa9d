"""Online authorizations and the per-card daily usage that enforces the daily limits."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Date, Enum, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc import clock
from cardsvc.db import Base, BigIntPK


class MessageKind(StrEnum):
    purchase = "purchase"
    preauth = "preauth"
    completion = "completion"
    reversal = "reversal"
    refund = "refund"
    void = "void"  # a serial reversed before its message arrived; the late message is refused
    load = "load"  # a purse load's claim on its serial and its first answer (see purse_loads)


class AuthStatus(StrEnum):
    declined = "declined"  # answered with a code other than 00; nothing moved
    approved = (
        "approved"  # purchase, completion, refund, reversal: money moved (or nothing to move)
    )
    held = "held"  # pre-authorization: a ledger hold reserves the amount
    completed = "completed"  # pre-authorization whose hold was posted by a completion
    voided = "voided"  # pre-authorization reversed before completion
    expired = "expired"  # pre-authorization whose hold expired
    reversed = "reversed"  # purchase/completion/refund undone by a reversal


class OnlineAuthorization(Base):
    """One terminal message and the first answer it got (a retry gets the same answer)."""

    __tablename__ = "online_authorizations"
    __table_args__ = (
        # Idempotency on the terminal's serial (DESIGN §9): the database is the judge.
        UniqueConstraint("terminal_no", "terminal_serial"),
        # Daily limits and the card's history scan by card and local date.
        Index("ix_online_authorizations_card_no_local_date", "card_no", "local_date"),
        # The hold-expiry task scans live pre-authorizations by expiry.
        Index("ix_online_authorizations_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    terminal_id: Mapped[int] = mapped_column(BigInteger)
    terminal_no: Mapped[str] = mapped_column(String(12))
    terminal_serial: Mapped[int] = mapped_column(BigInteger)
    merchant_no: Mapped[str] = mapped_column(String(15))
    merchant_category: Mapped[str] = mapped_column(String(16))
    kind: Mapped[MessageKind] = mapped_column(Enum(MessageKind, native_enum=False, length=16))
    request_hash: Mapped[str] = mapped_column(String(64))
    asn: Mapped[str | None] = mapped_column(String(16))
    card_no: Mapped[str | None] = mapped_column(String(16))
    resident_id: Mapped[int | None] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)  # requested, fen
    approved_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    response_code: Mapped[str] = mapped_column(String(2))
    decline_reason: Mapped[str | None] = mapped_column(String(64))
    auth_code: Mapped[str | None] = mapped_column(String(6))
    status: Mapped[AuthStatus] = mapped_column(Enum(AuthStatus, native_enum=False, length=16))
    original_id: Mapped[int | None] = mapped_column(ForeignKey("online_authorizations.id"))
    original_serial: Mapped[int | None] = mapped_column(BigInteger)
    hold_id: Mapped[int | None] = mapped_column(BigInteger)
    ledger_transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    local_date: Mapped[date] = mapped_column(Date)  # local day of the message (settings.timezone)
    clearing_date: Mapped[date | None] = mapped_column(Date)
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(default=clock.now)


class OnlineDailyUsage(Base):
    """What a card has spent online on one local day; bumped with a guarded UPDATE so two
    concurrent authorizations can never both pass the limit."""

    __tablename__ = "online_daily_usage"

    card_no: Mapped[str] = mapped_column(String(16), primary_key=True)
    local_date: Mapped[date] = mapped_column(Date, primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0)
