"""Ledger values exchanged with other domains (plain frozen dataclasses, integer fen)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from cardsvc.ledger.models import AccountKind, HoldStatus, Side


@dataclass(frozen=True, slots=True, order=True)
class AccountRef:
    kind: AccountKind
    owner_ref: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.owner_ref}" if self.owner_ref else str(self.kind)


@dataclass(frozen=True, slots=True)
class Entry:
    account: AccountRef
    side: Side
    amount: int  # fen, > 0


@dataclass(frozen=True, slots=True)
class PostingRequest:
    idempotency_key: str  # e.g. "upload:<terminal>:<batch>", "load:<load id>"
    tx_type: str  # "purchase_batch", "load", "refund", "settlement", "transfer", "reversal", ...
    clearing_date: date
    entries: Sequence[Entry]  # must balance: sum(debits) == sum(credits), every amount > 0
    record_ref: str | None = None  # the business record it books, e.g. "upload_batch:123"
    description: str = ""


@dataclass(frozen=True, slots=True)
class PostedTransaction:
    id: int
    idempotency_key: str
    replayed: bool  # True when an earlier posting with the same key and content is returned
    tx_type: str
    clearing_date: date
    amount: int  # sum of the debits
    line_count: int
    content_hash: str
    posted_at: datetime
    record_ref: str | None = None
    reverses_id: int | None = None
    hold_id: int | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    id: int
    idempotency_key: str
    account: AccountRef
    counterparty: AccountRef
    amount: int
    status: HoldStatus
    clearing_date: date
    expires_at: datetime
    created_at: datetime
    resolved_at: datetime | None = None
    posted_amount: int | None = None
    transaction_id: int | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class StatementLine:
    line_id: int  # the cursor of the statement's pages
    transaction_id: int
    tx_type: str
    posted_at: datetime
    clearing_date: date
    amount: int  # fen, signed in the account's normal sense: + raises its balance
    balance_after: int
    description: str
    record_ref: str | None


@dataclass(frozen=True, slots=True)
class Statement:
    account: AccountRef
    opening_balance: int | None  # the balance before the first line of this page (None: no line)
    lines: tuple[StatementLine, ...]
    next_after: int | None  # pass as ``after_line_id`` for the next page; None on the last


@dataclass(frozen=True, slots=True)
class Violation:
    check: str  # "transaction_unbalanced", "balances_not_zero", "balance_differs_from_lines", ...
    subject: str  # "tx:12", "account:card_float:3211...", "ledger"
    detail: str


@dataclass(frozen=True, slots=True)
class InvariantReport:
    """Result of the ledger invariants (reference/settlement_hsm.md §2.3, items 1-5)."""

    accounts: int
    transactions: int
    lines: int
    pending_holds: int
    signed_total: int  # Σ balances, debit-positive; 0 when the ledger is sound
    violations: tuple[Violation, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.violations

    def render(self) -> str:
        lines = [
            "ledger invariant report",
            f"  accounts:        {self.accounts}",
            f"  transactions:    {self.transactions}",
            f"  lines:           {self.lines}",
            f"  pending holds:   {self.pending_holds}",
            f"  Σ balances (Dr+): {self.signed_total}",
        ]
        if self.ok:
            lines.append(
                "OK: every transaction balances, balances sum to zero, each balance equals"
            )
            lines.append("    its lines and its holds, no forbidden negative")
        else:
            lines.append(f"FAILED: {len(self.violations)} violation(s)")
            lines.extend(f"  {v.check} {v.subject}: {v.detail}" for v in self.violations)
        return "\n".join(lines)
