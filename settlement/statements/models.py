"""Bank statements imported by finance (docs/bank-statements.md) and their lines, each with how
it matched the payouts.

One statement per (account, statement id): a second import of the same file finds it and
changes nothing; the file's SHA-256 tells the same file from another one under the same id.
Lines are written once, with the statement, in one transaction; only their match changes.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Date, Enum, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base, BigIntPK
from settlement.statements.parsing import Direction, Format


class MatchStatus(StrEnum):
    matched = "matched"  # a payout of this reference and amount: now confirmed
    unmatched = "unmatched"  # no payout for it: a break (unmatched_bank_line)
    differs = "differs"  # a payout of this reference, another amount or state: a break
    pending = "pending"  # not matched yet: payouts are not read by this host yet


class BankStatement(Base):
    __tablename__ = "bank_statements"
    __table_args__ = (UniqueConstraint("account", "statement_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    account: Mapped[str] = mapped_column(String(34))
    statement_id: Mapped[str] = mapped_column(String(35))
    format: Mapped[Format] = mapped_column(Enum(Format, native_enum=False, length=16))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    opening_balance: Mapped[int | None] = mapped_column(BigInteger)
    closing_balance: Mapped[int | None] = mapped_column(BigInteger)
    line_count: Mapped[int]
    credits: Mapped[int] = mapped_column(BigInteger)  # fen
    debits: Mapped[int] = mapped_column(BigInteger)  # fen
    first_booking: Mapped[date | None] = mapped_column(Date)
    last_booking: Mapped[date | None] = mapped_column(Date)
    imported_by: Mapped[str] = mapped_column(String(64))
    imported_at: Mapped[datetime]


class BankStatementLine(Base):
    __tablename__ = "bank_statement_lines"
    __table_args__ = (
        UniqueConstraint("statement_id", "line_no"),
        CheckConstraint("amount > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    statement_id: Mapped[int] = mapped_column(ForeignKey("bank_statements.id"))
    line_no: Mapped[int]
    booking_date: Mapped[date] = mapped_column(Date)
    value_date: Mapped[date | None] = mapped_column(Date)
    direction: Mapped[Direction] = mapped_column(Enum(Direction, native_enum=False, length=8))
    amount: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str | None] = mapped_column(String(64), index=True)
    bank_reference: Mapped[str | None] = mapped_column(String(64))
    counterparty_account: Mapped[str | None] = mapped_column(String(34))
    counterparty_name: Mapped[str | None] = mapped_column(String(140))
    remittance: Mapped[str | None] = mapped_column(String(140))
    match: Mapped[MatchStatus] = mapped_column(Enum(MatchStatus, native_enum=False, length=16))
    match_detail: Mapped[str | None] = mapped_column(String(200))
    break_id: Mapped[int | None] = mapped_column(BigInteger)
