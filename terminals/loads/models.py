"""Purse loads (圈存): one row per load request, from authorization to its final state."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Date, Enum, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc import clock
from cardsvc.db import Base, BigIntPK


class LoadSource(StrEnum):
    cash = "cash"  # cash paid at a counter: counter_cash → card_float
    account = "account"  # the resident's online account: resident_account → card_float
    # The balance of the card this one replaced (cards.tasks.release_balances):
    # card_transfer → card_float of the same card.
    transfer = "transfer"


class LoadStatus(StrEnum):
    declined = "declined"  # refused before any money moved
    pending = "pending"  # MAC2 issued, money in the card float, waiting for the card's TAC
    confirmed = "confirmed"  # proven on the card (TAC, transaction proof or later card state)
    refunded = "refunded"  # proven not on the card; the posting was reversed to its source
    voided = "voided"  # reversed by the terminal before the card took it; reversed to its source


class Resolution(StrEnum):
    tac = "tac"  # the terminal's confirmation with the card's TAC
    prove = "prove"  # GET TRANSACTION PROVE (reference/pboc.md §6.4) after a torn load
    later_record = "later_record"  # a later INITIALIZE FOR LOAD showed the counter past this load
    superseded = "superseded"  # another load at the same online counter was proven on the card
    reversal = "reversal"  # the terminal's reversal voided it while pending


_CONFIRMED_SQL = text("status = 'confirmed'")
_ISSUED_SQL = text("host_datetime IS NOT NULL")


class PurseLoad(Base):
    __tablename__ = "purse_loads"
    __table_args__ = (
        # Idempotency on the terminal's serial.
        UniqueConstraint("terminal_no", "terminal_serial"),
        # The card credits one load per online counter value: the database refuses a second
        # confirmed load at the same counter, whatever path tries it (no double credit).
        Index(
            "uq_purse_loads_confirmed_counter",
            "asn",
            "online_counter",
            unique=True,
            postgresql_where=_CONFIRMED_SQL,
            sqlite_where=_CONFIRMED_SQL,
        ),
        Index("ix_purse_loads_asn_status", "asn", "status"),
        # One MAC2 per card, online counter and host date-time: two loads of one card at one
        # counter with the same amount at one terminal would otherwise have the same TAC.
        Index(
            "uq_purse_loads_asn_counter_host_datetime",
            "asn",
            "online_counter",
            "host_datetime",
            unique=True,
            postgresql_where=_ISSUED_SQL,
            sqlite_where=_ISSUED_SQL,
        ),
        # The ageing job scans pending loads by age.
        Index("ix_purse_loads_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    terminal_id: Mapped[int] = mapped_column(BigInteger)
    terminal_no: Mapped[str] = mapped_column(String(12))
    terminal_serial: Mapped[int] = mapped_column(BigInteger)
    merchant_no: Mapped[str] = mapped_column(String(15))
    request_hash: Mapped[str] = mapped_column(String(64))
    asn: Mapped[str] = mapped_column(String(16))
    card_no: Mapped[str | None] = mapped_column(String(16))
    resident_id: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[LoadSource] = mapped_column(Enum(LoadSource, native_enum=False, length=16))
    source_ref: Mapped[str | None] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    # INITIALIZE FOR LOAD answer (reference/pboc.md §4), as the card gave it.
    balance_before: Mapped[int] = mapped_column(BigInteger)
    online_counter: Mapped[int]  # before the load; the card's counter after it is this + 1
    key_version: Mapped[int]
    random: Mapped[str] = mapped_column(String(8))
    mac1: Mapped[str] = mapped_column(String(8))
    host_datetime: Mapped[str | None] = mapped_column(String(14))
    mac2: Mapped[str | None] = mapped_column(String(8))
    tac: Mapped[str | None] = mapped_column(String(8))
    response_code: Mapped[str] = mapped_column(String(2))
    decline_reason: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[LoadStatus] = mapped_column(Enum(LoadStatus, native_enum=False, length=16))
    resolution: Mapped[Resolution | None] = mapped_column(
        Enum(Resolution, native_enum=False, length=16)
    )
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("purse_loads.id"))
    ledger_transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    refund_transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    clearing_date: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    resolved_at: Mapped[datetime | None]
    aged_at: Mapped[datetime | None]  # when it opened its aged_load break (pending too long)
