"""Cards, the card-number sequence and the pending balance moves (DESIGN §5, §8)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Enum, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc import clock
from cardsvc.db import Base, BigIntPK


class CardStatus(StrEnum):
    personalizing = "personalizing"
    active = "active"
    lost = "lost"
    frozen = "frozen"
    replaced = "replaced"
    cancelled = "cancelled"
    expired = "expired"


class CardType(StrEnum):
    standard = "standard"
    student = "student"
    senior = "senior"
    disabled = "disabled"


# Fare concession code written to the card (0015 MainCardType / 0016 CardType) and used by the
# terminals' concession table: 00 full fare, 01 student, 02 senior, 03 disabled.
CONCESSION_CODES: dict[CardType, str] = {
    CardType.standard: "00",
    CardType.student: "01",
    CardType.senior: "02",
    CardType.disabled: "03",
}

_ACTIVE_SQL = text("status = 'active'")
# A card that still lives on its chip: being personalized, or issued and not yet dead.
LIVE_STATUSES = ("personalizing", "active", "lost", "frozen")
_LIVE_CHIP_SQL = text(
    "chip_serial IS NOT NULL AND status IN ('personalizing', 'active', 'lost', 'frozen')"
)


class Card(Base):
    __tablename__ = "cards"
    __table_args__ = (
        # One active card per resident (DESIGN §8), enforced by the database on both engines.
        Index(
            "uq_cards_active_resident",
            "resident_id",
            unique=True,
            postgresql_where=_ACTIVE_SQL,
            sqlite_where=_ACTIVE_SQL,
        ),
        # A chip carries one live card: a chip serial is bound to at most one of them.
        Index(
            "uq_cards_live_chip_serial",
            "chip_serial",
            unique=True,
            postgresql_where=_LIVE_CHIP_SQL,
            sqlite_where=_LIVE_CHIP_SQL,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    card_no: Mapped[str] = mapped_column(String(16), unique=True)
    asn: Mapped[str] = mapped_column(String(16), unique=True)  # card_no in BCD, as hex
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id"), index=True)
    card_type: Mapped[CardType] = mapped_column(Enum(CardType, native_enum=False, length=16))
    concession_code: Mapped[str] = mapped_column(String(2))
    status: Mapped[CardStatus] = mapped_column(Enum(CardStatus, native_enum=False, length=16))
    chip_serial: Mapped[str | None] = mapped_column(String(16))
    key_version: Mapped[int] = mapped_column(default=1)
    issued_at: Mapped[datetime | None]
    expires_on: Mapped[date | None]
    replaced_by_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    status_changed_at: Mapped[datetime] = mapped_column(default=clock.now)


class CardNumberSequence(Base):
    """Last allocated 11-digit sequence per city; bumped with UPDATE ... RETURNING under a row lock,
    so two cards never share a number (gaps after a rollback are allowed)."""

    __tablename__ = "card_number_sequences"

    city_code: Mapped[str] = mapped_column(String(4), primary_key=True)
    last_value: Mapped[int] = mapped_column(BigInteger)


class ReleaseKind(StrEnum):
    to_new_card = "replace"  # old card float → the new card's transfer, loaded onto its chip later
    refund = "cancel"  # card float → resident online account or counter cash


class ReleaseStatus(StrEnum):
    pending = "pending"
    done = "done"


class BalanceRelease(Base):
    """A balance move that waits for the waiting period (DESIGN §8); executed by tasks.py."""

    __tablename__ = "card_balance_releases"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"), unique=True)
    kind: Mapped[ReleaseKind] = mapped_column(Enum(ReleaseKind, native_enum=False, length=16))
    due_at: Mapped[datetime] = mapped_column(index=True)
    # replace: the replacement application (its card may be allocated later);
    # cancel: "resident_account" or "counter_cash" and the account's owner ref.
    replacement_application_id: Mapped[int | None] = mapped_column(
        ForeignKey("card_applications.id")
    )
    refund_to: Mapped[str | None] = mapped_column(String(32))
    refund_ref: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[ReleaseStatus] = mapped_column(Enum(ReleaseStatus, native_enum=False, length=16))
    amount: Mapped[int | None] = mapped_column(BigInteger)
    ledger_transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    done_at: Mapped[datetime | None]
    # A release that failed is kept pending and tried again at the next run.
    failures: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(200))
    last_attempt_at: Mapped[datetime | None]
    # A cash refund is owed to the holder (holder_payable) until a counter pays it out.
    paid_out_at: Mapped[datetime | None]
    paid_out_by: Mapped[str | None] = mapped_column(String(64))
    payout_counter: Mapped[str | None] = mapped_column(String(32))
    payout_transaction_id: Mapped[int | None] = mapped_column(BigInteger)
