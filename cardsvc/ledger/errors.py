"""Ledger errors (rendered by the one domain-error handler in ``cardsvc.app``)."""

from __future__ import annotations

from cardsvc.errors import (
    Conflict,
    IdempotencyConflict,
    InvalidStateTransition,
    NotFound,
    ValidationFailed,
)

__all__ = [
    "AlreadyReversed",
    "HoldExpired",
    "HoldNotFound",
    "IdempotencyConflict",
    "InsufficientFunds",
    "InvalidStateTransition",
    "LedgerUnbalanced",
    "TransactionNotFound",
]


class LedgerUnbalanced(ValidationFailed):
    """Debits and credits differ, an amount is not a positive integer, or there are no entries."""


class InsufficientFunds(Conflict):
    """A non-overdraft account would end below zero or below its holds; refused whole."""


class AlreadyReversed(Conflict):
    """The transaction already has a reversal (a transaction is reversed at most once)."""


class HoldExpired(InvalidStateTransition):
    """The hold passed its expiry before it was posted."""


class TransactionNotFound(NotFound):
    pass


class HoldNotFound(NotFound):
    pass
