"""Double-entry ledger tables (DESIGN §10, reference/settlement_hsm.md §2).

Accounts carry their balance in their normal sense (liability and income: credits - debits;
asset: debits - credits) and the sum of their pending holds. Transactions and lines are
append-only; a correction is a new transaction that reverses an earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    Enum,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base, BigIntPK


class AccountKind(StrEnum):
    card_float = "card_float"  # one per card, owner_ref = 16-digit card number
    # A replaced card's balance, moved to its successor after the waiting period and waiting to
    # be loaded onto the new chip at a counter or kiosk (a "transfer" load); owner_ref = the
    # new card's number. Kept apart from card_float, which always matches what the chip holds.
    card_transfer = "card_transfer"
    resident_account = "resident_account"  # resident online account, owner_ref = resident db id
    merchant_pending = (
        "merchant_pending"  # operator/merchant pending clearing, 15-digit merchant id
    )
    merchant_payable = "merchant_payable"  # settled, not yet paid out
    biller_payable = "biller_payable"  # utility biller, owner_ref = biller code
    # Cash taken at a counter for bill payments, until the biller is paid from it (through a
    # hold) or it is handed back to the payer of a failed payment; owner_ref = counter code.
    bill_suspense = "bill_suspense"
    fee_income = "fee_income"  # owner_ref "" (one)
    counter_cash = "counter_cash"  # cash at a counter/outlet, owner_ref = counter code
    # Cash owed to a card holder (a cancelled card's balance refunded in cash), until a counter
    # pays it out; owner_ref = resident db id. Owed whatever any drawer holds.
    holder_payable = "holder_payable"
    bank = "bank"  # owner_ref = bank account code
    suspense_gray = "suspense_gray"  # gray records that could not be refused economically
    suspense_short = "suspense_short"  # short-balance items
    suspense_bank = "suspense_bank"  # unmatched bank statement lines
    refund_clearing = "refund_clearing"  # lost/cancelled card balances in their waiting period
    # Break amounts finance wrote off (approved by a second person): the operator's own result,
    # of either sign.
    break_written_off = "break_written_off"


class Side(StrEnum):
    debit = "debit"
    credit = "credit"


@dataclass(frozen=True, slots=True)
class KindRule:
    normal_side: Side
    may_go_negative: bool


# Normal side and overdraft flag per kind (reference/settlement_hsm.md §2.1, invariant 5 of §2.3):
# customer float, payables, fee income and counter cash are never negative. Pending clearing
# nets refunds against later purchases at settlement, the bank account records what the bank
# reports, and suspense accounts hold breaks of either sign, so those may go negative.
KIND_RULES: dict[AccountKind, KindRule] = {
    AccountKind.card_float: KindRule(Side.credit, may_go_negative=False),
    AccountKind.card_transfer: KindRule(Side.credit, may_go_negative=False),
    AccountKind.resident_account: KindRule(Side.credit, may_go_negative=False),
    AccountKind.merchant_pending: KindRule(Side.credit, may_go_negative=True),
    AccountKind.merchant_payable: KindRule(Side.credit, may_go_negative=False),
    AccountKind.biller_payable: KindRule(Side.credit, may_go_negative=False),
    AccountKind.bill_suspense: KindRule(Side.credit, may_go_negative=False),
    AccountKind.fee_income: KindRule(Side.credit, may_go_negative=False),
    AccountKind.counter_cash: KindRule(Side.debit, may_go_negative=False),
    AccountKind.holder_payable: KindRule(Side.credit, may_go_negative=False),
    AccountKind.bank: KindRule(Side.debit, may_go_negative=True),
    AccountKind.suspense_gray: KindRule(Side.credit, may_go_negative=True),
    AccountKind.suspense_short: KindRule(Side.credit, may_go_negative=True),
    AccountKind.suspense_bank: KindRule(Side.credit, may_go_negative=True),
    AccountKind.refund_clearing: KindRule(Side.credit, may_go_negative=False),
    AccountKind.break_written_off: KindRule(Side.credit, may_go_negative=True),
}


class HoldStatus(StrEnum):
    pending = "pending"
    posted = "posted"
    voided = "voided"
    expired = "expired"


class LedgerAccount(Base):
    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("kind", "owner_ref"),
        # Belt and braces behind the service's own check: the database refuses a forbidden
        # negative even if a future code path forgets it.
        CheckConstraint("may_go_negative OR balance >= 0", name="no_forbidden_negative"),
        CheckConstraint("held >= 0", name="held_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kind: Mapped[AccountKind] = mapped_column(Enum(AccountKind, native_enum=False, length=32))
    owner_ref: Mapped[str] = mapped_column(String(64))
    normal_side: Mapped[Side] = mapped_column(Enum(Side, native_enum=False, length=8))
    may_go_negative: Mapped[bool]
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime]


class LedgerTransactionKey(Base):
    """What makes a transaction unique across every clearing day, and where to find it.

    On PostgreSQL the journal (transactions and lines) is partitioned by clearing date, and a
    unique index of a partitioned table must include the partition key: it could only say "unique
    within one day". A retry after the day cut carries the same key on another day, so the keys
    live here, in one table that is not partitioned: the idempotency key, the transaction each
    reversal undoes (once), and the clearing date that locates the transaction's partition.
    """

    __tablename__ = "ledger_transaction_keys"

    idempotency_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    transaction_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    clearing_date: Mapped[date] = mapped_column(Date)
    content_hash: Mapped[str] = mapped_column(String(64))
    # A transaction is reversed at most once.
    reverses_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_transaction_keys.transaction_id"), unique=True
    )


class LedgerTransaction(Base):
    """One balanced posting. Partitioned by ``clearing_date`` on PostgreSQL (one partition per
    day, ``cardsvc.clearing.partitions``), where its primary key is (clearing_date, id)."""

    __tablename__ = "ledger_transactions"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        {"postgresql_partition_by": "RANGE (clearing_date)"},
    )

    # Allocated with its key (``ledger.repository.write_transaction``), never by the table.
    id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("ledger_transaction_keys.transaction_id"),
        primary_key=True,
        autoincrement=False,
    )
    tx_type: Mapped[str] = mapped_column(String(32))
    clearing_date: Mapped[date] = mapped_column(Date)
    record_ref: Mapped[str | None] = mapped_column(String(128))
    hold_id: Mapped[int | None] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)  # sum of the debits (= sum of the credits)
    line_count: Mapped[int]
    description: Mapped[str] = mapped_column(String(255))
    posted_at: Mapped[datetime]


class LedgerLine(Base):
    """One side of a transaction; carries its transaction's clearing date (the partition key)."""

    __tablename__ = "ledger_lines"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_ledger_lines_account_id_transaction_id", "account_id", "transaction_id"),
        {"postgresql_partition_by": "RANGE (clearing_date)"},
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    clearing_date: Mapped[date] = mapped_column(Date)
    transaction_id: Mapped[int] = mapped_column(
        ForeignKey("ledger_transaction_keys.transaction_id"), index=True
    )
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    side: Mapped[Side] = mapped_column(Enum(Side, native_enum=False, length=8))
    amount: Mapped[int] = mapped_column(BigInteger)


class LedgerHold(Base):
    __tablename__ = "ledger_holds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        # expire_holds scans pending holds by expiry.
        Index("ix_ledger_holds_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    counterparty_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    clearing_date: Mapped[date] = mapped_column(Date)
    status: Mapped[HoldStatus] = mapped_column(Enum(HoldStatus, native_enum=False, length=16))
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    posted_amount: Mapped[int | None] = mapped_column(BigInteger)
    transaction_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("ledger_transaction_keys.transaction_id")
    )
    reason: Mapped[str | None] = mapped_column(String(255))
