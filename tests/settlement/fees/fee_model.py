"""A pure-Python reference of the fee rules (docs/fees.md), written from the documentation and
independent of the SQL: the tests compare the database's answers with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

RATE_UNITS = 100_000


@dataclass(frozen=True)
class Rule:
    id: int
    merchant_no: str | None = None
    category: str | None = None
    tx_class: str | None = None
    effective_from: date = date(2026, 1, 1)
    effective_to: date | None = None
    per_record: int = 0
    rate: int = 0
    daily: int = 0
    min_fee: int | None = None
    max_fee: int | None = None
    tiers: list[tuple[int, int]] = field(default_factory=list)  # (amount_from, rate), rising
    retired: bool = False


def record_fee(rule: Rule, amount: int) -> int:
    if amount <= 0:
        return 0
    rate = rule.rate
    for start, tier_rate in rule.tiers:
        if amount >= start:
            rate = tier_rate
    variable = (Decimal(amount) * rate / RATE_UNITS).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    fee = rule.per_record + int(variable)
    if rule.min_fee is not None and fee < rule.min_fee:
        fee = rule.min_fee
    if rule.max_fee is not None and fee > rule.max_fee:
        fee = rule.max_fee
    return fee


def line_fee(rule: Rule | None, amounts: list[int]) -> int:
    if rule is None:
        return 0
    fees = sum(record_fee(rule, a) for a in amounts)
    return fees + (rule.daily if any(a > 0 for a in amounts) else 0)


def choose(
    rules: list[Rule], day: date, merchant_no: str, category: str, tx_class: str
) -> Rule | None:
    def applies(r: Rule) -> bool:
        if r.retired or r.effective_from > day:
            return False
        if r.effective_to is not None and r.effective_to < day:
            return False
        if r.tx_class is not None and r.tx_class != tx_class:
            return False
        if r.merchant_no is not None:
            return r.merchant_no == merchant_no
        return r.category is None or r.category == category

    def rank(r: Rule) -> tuple[int, int, int, int]:
        level = 0 if r.merchant_no is not None else 1 if r.category is not None else 2
        return (level, 1 if r.tx_class is None else 0, -r.effective_from.toordinal(), -r.id)

    found = sorted((r for r in rules if applies(r)), key=rank)
    return found[0] if found else None
