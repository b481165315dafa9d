"""Break items (对账差错, reference/settlement_hsm.md §1.5): one row per thing the books cannot
settle on their own, whatever domain found it.

A break names what it is about by plain references, never by a foreign key into another
domain's table, so that any domain (terminals, settlement, bills, bank reconciliation) can open
one without the core importing it: ``source`` and ``source_id`` name the row that opened it
(``offline_record`` 17, ``purse_load`` 5), and ``asn``/``counter``/``terminal_no``/``reference``
carry the keys people and jobs search by. ``open_key`` makes opening idempotent for openers that
may run twice (a job, a retried request).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Date, Enum, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base, BigIntPK


class BreakKind(StrEnum):
    """Why a break opened. A new kind needs no migration (the column is a plain string)."""

    counter_gap = "counter_gap"  # offline counters missing from a card's chain (one per counter)
    gray = "gray"  # a gray record held: the terminal never saw the card's answer
    tac_failed = "tac_failed"  # a record whose TAC does not verify, kept for re-examination
    refused_paid = "refused_paid"  # a record refused 02/05/07 whose TAC verifies: the chip paid
    aged_load = "aged_load"  # a purse load pending without card evidence past the allowed time
    # A bank credit whose account reference names no account: the money waits in suspense.
    unmatched_bank_credit = "unmatched_bank_credit"
    # A bank sent one reference twice with other content: nothing booked for the second.
    bank_credit_conflict = "bank_credit_conflict"
    # The card proves a load the host undid (voided by a reversal, or refunded): the chip holds
    # money its source got back.
    load_undone_on_card = "load_undone_on_card"
    # A line of the bank's statement of the payout account that matches no payout (no reference,
    # an unknown one, a credit).
    unmatched_bank_line = "unmatched_bank_line"
    # A line naming a payout whose amount or state it contradicts (another amount, a payout not
    # issued, or one already confirmed by another line).
    bank_line_differs = "bank_line_differs"
    # A biller's answer to the day's reconciliation file lists the line as only ours, only
    # theirs, of another amount or of another state (docs/bills.md §11).
    biller_disagreement = "biller_disagreement"
    # A biller's reconciliation file whose totals are not the day's movement of its payable in
    # the ledger: it is not sent.
    biller_file_unbalanced = "biller_file_unbalanced"
    # A biller's success or refund of a bill payment that came after the payment's hold had run
    # out: the money was released, the biller counts the bill paid (docs/bills.md §3.3).
    bill_hold_expired = "bill_hold_expired"
    # Counter cash of a bill payment that did not pay, still in the counter's bill suspense
    # (not handed back) past the allowed time (docs/bills.md §5).
    bill_cash_unreturned = "bill_cash_unreturned"


class BreakStatus(StrEnum):
    open = "open"
    resolved = "resolved"


class BreakItem(Base):
    __tablename__ = "break_items"
    __table_args__ = (
        # Counter gaps are closed by (card, counter) when a later record fills them.
        Index("ix_break_items_asn_counter", "asn", "counter"),
        Index("ix_break_items_status_clearing_date", "status", "clearing_date"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kind: Mapped[BreakKind] = mapped_column(Enum(BreakKind, native_enum=False, length=32))
    status: Mapped[BreakStatus] = mapped_column(Enum(BreakStatus, native_enum=False, length=16))
    amount: Mapped[int | None] = mapped_column(BigInteger)  # fen; None where it is not known
    clearing_date: Mapped[date] = mapped_column(Date)  # the business day the break belongs to
    reason: Mapped[str] = mapped_column(String(200))  # why it opened, for the person who works it
    # What it is about (each may be None; the opener fills what it knows).
    source: Mapped[str] = mapped_column(String(32))  # the kind of row that opened it
    source_id: Mapped[int | None] = mapped_column(BigInteger)  # that row's id
    asn: Mapped[str | None] = mapped_column(String(16))
    counter: Mapped[int | None]  # the card's offline or online counter, by kind
    terminal_no: Mapped[str | None] = mapped_column(String(12))
    reference: Mapped[str | None] = mapped_column(String(64))  # e.g. a bank line or a bill key
    open_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime]
    # Resolution: who closed it, how (a short code), and what they wrote.
    resolver: Mapped[str | None] = mapped_column(String(64))
    resolution: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(String(500))
    resolved_at: Mapped[datetime | None]
