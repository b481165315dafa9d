"""Offline upload batches and their records (DESIGN §9 Offline uploads;
reference/settlement_hsm.md §1.3-§1.5).

Records are immutable and every record is stored, refused ones included (with their code), so
that settlement can re-examine gray and TAC-failed records against each card's chain. Only an
accepted record (00, or 10 adjusted in later) claims its duplicate keys: the partial unique
indexes on (ASN, offline counter) and (terminal number, terminal serial) make the database refuse
a second acceptance whatever the application does.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base, BigIntPK


class ResultCode(StrEnum):
    accepted = "00"
    tac_invalid = "01"
    invalid_data = "02"
    duplicate = "03"
    gray = "04"
    expired = "05"
    unknown_card = "06"
    unknown_terminal = "07"
    adjusted = "10"


# Codes whose records hold their duplicate keys (the partial unique indexes use this predicate).
CLAIMING = text("result_code IN ('00', '10')")


class UploadBatch(Base):
    __tablename__ = "upload_batches"
    __table_args__ = (UniqueConstraint("terminal_id", "batch_no"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    terminal_id: Mapped[int] = mapped_column(ForeignKey("terminals.id"))
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), index=True)
    batch_no: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    record_count: Mapped[int]
    total_amount: Mapped[int] = mapped_column(BigInteger)
    accepted_count: Mapped[int]
    accepted_amount: Mapped[int] = mapped_column(BigInteger)
    refused_count: Mapped[int]
    refused_amount: Mapped[int] = mapped_column(BigInteger)
    clearing_date: Mapped[date] = mapped_column(Date, index=True)
    ledger_transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    blacklist_version: Mapped[int] = mapped_column(BigInteger)
    params_version: Mapped[int] = mapped_column(BigInteger)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)  # the first answer, returned to repeats
    received_at: Mapped[datetime]


class OfflineRecord(Base):
    __tablename__ = "offline_records"
    __table_args__ = (
        Index(
            "uq_offline_records_asn_counter",
            "asn",
            "offline_counter",
            unique=True,
            postgresql_where=CLAIMING,
            sqlite_where=CLAIMING,
        ),
        Index(
            "uq_offline_records_terminal_serial",
            "terminal_no",
            "terminal_serial",
            unique=True,
            postgresql_where=CLAIMING,
            sqlite_where=CLAIMING,
        ),
        Index("ix_offline_records_batch_id_position", "batch_id", "position"),
        Index("ix_offline_records_clearing_date_merchant_id", "clearing_date", "merchant_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("upload_batches.id"))
    position: Mapped[int]  # index of the record in its batch
    result_code: Mapped[str] = mapped_column(String(2))
    detail: Mapped[str | None] = mapped_column(String(200))
    merchant_id: Mapped[int] = mapped_column(BigInteger)
    uploading_terminal_id: Mapped[int] = mapped_column(BigInteger)
    # Record fields (null when the uploaded value was missing or malformed: see ``raw``).
    asn: Mapped[str | None] = mapped_column(String(16))
    card_id: Mapped[int | None] = mapped_column(BigInteger)
    card_type: Mapped[str | None] = mapped_column(String(2))
    tx_type: Mapped[int | None]
    offline_counter: Mapped[int | None]
    balance_before: Mapped[int | None] = mapped_column(BigInteger)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    fare: Mapped[int | None] = mapped_column(BigInteger)
    terminal_no: Mapped[str | None] = mapped_column(String(12))
    psam_no: Mapped[str | None] = mapped_column(String(20))
    terminal_serial: Mapped[int | None] = mapped_column(BigInteger)
    tx_datetime: Mapped[str | None] = mapped_column(String(14))  # local card/terminal time
    tx_time: Mapped[datetime | None]  # the same instant in UTC
    key_version: Mapped[int | None]
    tac: Mapped[str | None] = mapped_column(String(8))
    gray: Mapped[bool]
    blacklisted: Mapped[bool]
    compound: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # as uploaded, for refused records
    clearing_date: Mapped[date | None] = mapped_column(Date)  # accepted records only
    received_at: Mapped[datetime]
