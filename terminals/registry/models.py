"""Operators/merchants and their terminals (DESIGN §9 Registry; §5 identifiers)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc import clock
from cardsvc.db import Base, BigIntPK


class MerchantCategory(StrEnum):
    bus = "bus"
    taxi = "taxi"
    parking = "parking"
    fuel = "fuel"
    retail = "retail"
    utility = "utility"


class MerchantStatus(StrEnum):
    active = "active"
    suspended = "suspended"


class TerminalKind(StrEnum):
    """What a terminal is, and so what it may ask of the host (least privilege).

    Every kind uploads offline records. Online payments need a terminal that serves a payer:
    not a ``validator``. Purse loads put money on a card, so only a ``counter`` (staffed; it may
    take cash) or a ``kiosk`` (self-service; only the holder's own money: the online account or a
    replaced card's balance) may load; ``terminals.loads.service.LOAD_SOURCES`` has the table.
    """

    validator = "validator"  # bus and taxi validators: offline debits only
    pos = "pos"  # shop, parking and fuel terminals: offline debits and online payments
    kiosk = "kiosk"  # self-service: online payments, loads of the holder's own money
    counter = "counter"  # service counter: online payments, loads from cash or the online account


class TerminalStatus(StrEnum):
    active = "active"
    suspended = "suspended"
    retired = "retired"


class Merchant(Base):
    __tablename__ = "merchants"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    merchant_no: Mapped[str] = mapped_column(String(15), unique=True)  # 15 digits (DESIGN §5)
    name: Mapped[str] = mapped_column(String(100))
    category: Mapped[MerchantCategory] = mapped_column(
        Enum(MerchantCategory, native_enum=False, length=16)
    )
    settlement_account: Mapped[str] = mapped_column(String(34))  # bank account the payouts go to
    status: Mapped[MerchantStatus] = mapped_column(
        Enum(MerchantStatus, native_enum=False, length=16)
    )
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class Terminal(Base):
    __tablename__ = "terminals"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    terminal_no: Mapped[str] = mapped_column(
        String(12), unique=True
    )  # 12 digits = PSAM terminal number
    psam_no: Mapped[str] = mapped_column(String(20), unique=True)  # the PSAM's own serial number
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), index=True)
    kind: Mapped[TerminalKind] = mapped_column(Enum(TerminalKind, native_enum=False, length=16))
    status: Mapped[TerminalStatus] = mapped_column(
        Enum(TerminalStatus, native_enum=False, length=16)
    )
    description: Mapped[str] = mapped_column(String(100), default="")
    # List versions the terminal last reported (DESIGN §9 Lists; reference/pboc.md §9.2.5 CRF9).
    blacklist_version: Mapped[int] = mapped_column(BigInteger, default=0)
    params_version: Mapped[int] = mapped_column(BigInteger, default=0)
    versions_reported_at: Mapped[datetime | None]
    last_sign_in_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
