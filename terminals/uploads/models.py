"""Offline upload batches and their records (DESIGN §9 Offline uploads;
reference/settlement_hsm.md §1.3-§1.5).

Records are immutable and every record is stored, refused ones included (with their code), so
that settlement can re-examine gray and TAC-failed records against each card's chain. Every
record carries the clearing date of its upload; on PostgreSQL the table is partitioned by it (one
partition per day, ``cardsvc.clearing.partitions``), with the primary key (clearing_date, id).

Only an accepted record (00, or 10 adjusted in later) claims its duplicate keys, in two tables
that are not partitioned, so that a key stays unique across every day (a unique index of a
partitioned table can only be unique within one day): ``offline_card_keys`` on (ASN, offline
counter) and ``offline_serial_keys`` on (terminal number, terminal serial). Their primary keys
make the database refuse a second acceptance whatever the application does. The card keys also
keep what a card's chain needs (balance before and amount), so that a chain check reads one narrow
row per link instead of a record in some day's partition.
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


# Codes whose records hold their duplicate keys.
CLAIMING_CODES: frozenset[str] = frozenset({"00", "10"})


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
        Index("ix_offline_records_batch_id_position", "batch_id", "position"),
        {"postgresql_partition_by": "RANGE (clearing_date)"},
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
    clearing_date: Mapped[date] = mapped_column(Date)  # the upload's clearing date
    received_at: Mapped[datetime]


class OfflineCardKey(Base):
    """(ASN, offline counter) of an accepted record: one card debit is accepted once, ever."""

    __tablename__ = "offline_card_keys"

    asn: Mapped[str] = mapped_column(String(16), primary_key=True)
    offline_counter: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    record_id: Mapped[int] = mapped_column(BigInteger)
    clearing_date: Mapped[date] = mapped_column(Date)
    # What the card's chain needs (None only for records accepted before these were kept).
    balance_before: Mapped[int | None] = mapped_column(BigInteger)
    amount: Mapped[int | None] = mapped_column(BigInteger)


class OfflineSerialKey(Base):
    """(terminal number, terminal serial) of an accepted record."""

    __tablename__ = "offline_serial_keys"

    terminal_no: Mapped[str] = mapped_column(String(12), primary_key=True)
    terminal_serial: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    record_id: Mapped[int] = mapped_column(BigInteger)
    clearing_date: Mapped[date] = mapped_column(Date)
