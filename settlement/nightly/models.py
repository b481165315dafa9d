"""Nightly settlement tables (docs/settlement.md): one run per clearing date, the outcome of each
of its steps, what the day cleared per merchant and transaction class, and each merchant's batch.

Every step writes its outcome and marks itself done in one database transaction (or, for the
postings, one transaction per chunk of batches, each batch stamped with its ledger transaction),
so a run killed anywhere resumes at the first step not done and nothing is written twice.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Date, Enum, String
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base


class Step(StrEnum):
    """The steps of a run, in order."""

    close = "close"
    reexamine = "reexamine"
    clear = "clear"
    fees = "fees"
    batches = "batches"
    postings = "postings"
    files = "files"
    report = "report"


STEPS: tuple[Step, ...] = tuple(Step)


class RunStatus(StrEnum):
    running = "running"  # started and not finished (or killed: the next run resumes it)
    failed = "failed"  # a step refused; the day stays resumable
    settled = "settled"  # every step done


class BatchStatus(StrEnum):
    due = "due"  # gross positive and fees within it: posted to the payable and fee income
    carried = "carried"  # nothing positive to settle: the pending balance stays
    posted = "posted"


class SettlementRun(Base):
    __tablename__ = "settlement_runs"

    clearing_date: Mapped[date] = mapped_column(Date, primary_key=True)
    status: Mapped[RunStatus] = mapped_column(Enum(RunStatus, native_enum=False, length=16))
    last_step: Mapped[Step | None] = mapped_column(Enum(Step, native_enum=False, length=16))
    error: Mapped[str | None] = mapped_column(String(500))
    attempts: Mapped[int]
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    settled_at: Mapped[datetime | None]


class SettlementStep(Base):
    """A step done: how many rows it produced and the amount they carry (fen)."""

    __tablename__ = "settlement_steps"

    clearing_date: Mapped[date] = mapped_column(Date, primary_key=True)
    step: Mapped[Step] = mapped_column(Enum(Step, native_enum=False, length=16), primary_key=True)
    rows: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    detail: Mapped[str] = mapped_column(String(500))
    seconds: Mapped[float]
    finished_at: Mapped[datetime]


class SettlementLine(Base):
    """What one merchant cleared on the day in one transaction class (count, gross and fee in
    fen; gross is negative for refunds)."""

    __tablename__ = "settlement_lines"

    clearing_date: Mapped[date] = mapped_column(Date, primary_key=True)
    merchant_no: Mapped[str] = mapped_column(String(15), primary_key=True)
    tx_class: Mapped[str] = mapped_column(String(32), primary_key=True)
    merchant_id: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(BigInteger)
    gross: Mapped[int] = mapped_column(BigInteger)
    fee: Mapped[int] = mapped_column(BigInteger, default=0)
    # The fee rule the fees step chose for the line (null: none applied, the fee is 0).
    fee_rule_id: Mapped[int | None] = mapped_column(BigInteger)


class SettlementBatch(Base):
    """One merchant's settlement of the day: gross = net + fee; posted once."""

    __tablename__ = "settlement_batches"
    __table_args__ = (CheckConstraint("gross = net + fee", name="balanced"),)

    clearing_date: Mapped[date] = mapped_column(Date, primary_key=True)
    merchant_no: Mapped[str] = mapped_column(String(15), primary_key=True)
    merchant_id: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(BigInteger)
    gross: Mapped[int] = mapped_column(BigInteger)
    fee: Mapped[int] = mapped_column(BigInteger)
    net: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[BatchStatus] = mapped_column(Enum(BatchStatus, native_enum=False, length=16))
    ledger_transaction_id: Mapped[int | None] = mapped_column(BigInteger)
    # The payout that paid this batch's net (settlement_payouts.reference); null until then.
    # Indexed: a day's payouts look for the batches not paid yet (null) and those a payout paid.
    payout_reference: Mapped[str | None] = mapped_column(String(24), index=True)
