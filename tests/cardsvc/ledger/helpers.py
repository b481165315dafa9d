"""Small builders shared by the ledger tests."""

from __future__ import annotations

from datetime import date

from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest

DAY = date(2026, 11, 23)
COUNTER = AccountRef(AccountKind.counter_cash, "OUTLET01")
FEES = AccountRef(AccountKind.fee_income)
BANK = AccountRef(AccountKind.bank, "ICBC-001")


def card(n: int) -> AccountRef:
    return AccountRef(AccountKind.card_float, f"3211{n:012d}")


def merchant(n: int, kind: AccountKind = AccountKind.merchant_pending) -> AccountRef:
    return AccountRef(kind, f"{n:015d}")


def dr(ref: AccountRef, amount: int) -> Entry:
    return Entry(ref, Side.debit, amount)


def cr(ref: AccountRef, amount: int) -> Entry:
    return Entry(ref, Side.credit, amount)


def load(key: str, ref: AccountRef, amount: int) -> PostingRequest:
    """Cash top-up at a counter: Dr counter cash / Cr card float (reference §2.2)."""
    return PostingRequest(key, "load", DAY, [dr(COUNTER, amount), cr(ref, amount)], f"load:{key}")


def purchase_batch(
    key: str, items: list[tuple[AccountRef, int]], acceptor: AccountRef
) -> PostingRequest:
    """Offline purchases: Dr each card float / Cr the acceptor's pending clearing once."""
    entries = [dr(ref, amount) for ref, amount in items]
    entries.append(cr(acceptor, sum(amount for _, amount in items)))
    return PostingRequest(key, "purchase_batch", DAY, entries, f"upload_batch:{key}")
