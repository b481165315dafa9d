"""Proposals that resolve a break item (maker-checker): one finance user proposes how a break is
resolved, a second one approves it, and only the approval moves money."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Enum, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base, BigIntPK


class Action(StrEnum):
    write_off = "write_off"  # the operator absorbs the amount
    adjust_merchant = "adjust_merchant"  # the amount goes to a merchant (its pending account)
    refund_card = "refund_card"  # to a card, loaded onto its chip later (a transfer load)
    refund_resident = "refund_resident"  # to a resident's online account
    reexamine = "reexamine"  # no money moves; the break stays open for its domain to re-examine


class ProposalStatus(StrEnum):
    proposed = "proposed"
    approved = "approved"
    rejected = "rejected"


class BreakProposal(Base):
    __tablename__ = "break_proposals"
    __table_args__ = (Index("ix_break_proposals_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    break_id: Mapped[int] = mapped_column(BigInteger, index=True)
    action: Mapped[Action] = mapped_column(Enum(Action, native_enum=False, length=16))
    amount: Mapped[int | None] = mapped_column(BigInteger)  # fen; None for a re-examination
    # Whom the money goes to: a merchant id (15 digits), a card number (16 digits) or a
    # resident's id; None for a write-off or a re-examination.
    target: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(String(500))
    status: Mapped[ProposalStatus] = mapped_column(
        Enum(ProposalStatus, native_enum=False, length=16)
    )
    proposed_by_id: Mapped[int] = mapped_column(BigInteger)
    proposed_by: Mapped[str] = mapped_column(String(64))
    proposed_at: Mapped[datetime]
    decided_by_id: Mapped[int | None] = mapped_column(BigInteger)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]
    ledger_transaction_id: Mapped[int | None] = mapped_column(BigInteger)
