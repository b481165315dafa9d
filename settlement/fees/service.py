"""Fee rules (docs/fees.md): adding, listing and retiring them, and the fees of a settled day.

A rule is checked here before it is stored: one scope (a merchant, a category or every merchant),
ordered dates, a minimum not above the maximum, tiers that start at 0 and rise; and it may not
start on a day whose fees are already computed (it would never apply to that day, and the day's
files and postings would not show it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from itertools import pairwise

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.audit import service as audit
from cardsvc.errors import Conflict, NotFound, ValidationFailed
from settlement.fees import repository
from settlement.fees.models import FeeRule, FeeTier
from settlement.fees.schemas import FeeRuleCreate, FeeRuleOut, TierIn, TierOut


class FeeRuleInvalid(ValidationFailed):
    """A fee rule that parsed but cannot apply (422)."""


class FeeRuleBackdated(Conflict):
    """A rule starting on or before a day whose fees were already computed (409)."""


class FeeRuleRetired(Conflict):
    """The rule was already retired (409)."""


def check(body: FeeRuleCreate) -> None:
    """The rules a body must meet beyond its field ranges, in this order."""
    if body.merchant_no is not None and body.category is not None:
        raise FeeRuleInvalid("a rule applies to a merchant or to a category, not both")
    if body.effective_to is not None and body.effective_to < body.effective_from:
        raise FeeRuleInvalid("effective_to is before effective_from")
    if body.min_fee is not None and body.max_fee is not None and body.min_fee > body.max_fee:
        raise FeeRuleInvalid("min_fee is above max_fee")
    if body.tiers:
        starts = [t.amount_from for t in body.tiers]
        if starts[0] != 0:
            raise FeeRuleInvalid("the first tier starts at amount_from 0")
        if any(b <= a for a, b in pairwise(starts)):
            raise FeeRuleInvalid("tiers rise: each amount_from above the one before")


async def add_rule(session: AsyncSession, body: FeeRuleCreate, *, actor: str) -> FeeRuleOut:
    check(body)
    if body.merchant_no is not None and not await repository.merchant_exists(
        session, body.merchant_no
    ):
        raise NotFound(f"merchant {body.merchant_no} not found")
    latest = await repository.latest_fees_day(session)
    if latest is not None and body.effective_from <= latest:
        raise FeeRuleBackdated(
            f"fees are computed up to {latest.isoformat()}: a new rule starts after that day"
        )
    rule = FeeRule(
        merchant_no=body.merchant_no, category=body.category, tx_class=body.tx_class,
        effective_from=body.effective_from, effective_to=body.effective_to,
        per_record=body.per_record, rate=body.rate, daily=body.daily, min_fee=body.min_fee,
        max_fee=body.max_fee, note=body.note, created_by=actor, created_at=clock.now(),
    )  # fmt: skip
    tiers = [_tier(t, body.tiers[i + 1] if i + 1 < len(body.tiers) else None)
             for i, t in enumerate(body.tiers)]  # fmt: skip
    await repository.add_rule(session, rule, tiers)
    out = view(rule, tiers)
    await audit.record(
        session, actor=actor, action="fee_rule.add", entity="fee_rule", entity_id=str(rule.id),
        after=out.model_dump(mode="json", exclude={"created_at", "retired_at"}),
    )  # fmt: skip
    return out


def _tier(tier: TierIn, following: TierIn | None) -> FeeTier:
    upper = following.amount_from if following is not None else None
    return FeeTier(amount_from=tier.amount_from, amount_to=upper, rate=tier.rate)


async def retire_rule(session: AsyncSession, rule_id: int, *, actor: str) -> FeeRuleOut:
    """A retired rule applies to no day whose fees are computed after (days already computed
    keep the fees they got)."""
    rule = await repository.get_rule(session, rule_id, for_update=True)
    if rule is None:
        raise NotFound(f"fee rule {rule_id} not found")
    if rule.retired_at is not None:
        raise FeeRuleRetired(f"fee rule {rule_id} was retired at {rule.retired_at.isoformat()}")
    rule.retired_at = clock.now()
    rule.retired_by = actor
    await session.flush()
    await audit.record(
        session, actor=actor, action="fee_rule.retire", entity="fee_rule",
        entity_id=str(rule.id), after={"retired": True},
    )  # fmt: skip
    tiers = await repository.tiers_of(session, [rule.id])
    return view(rule, tiers[rule.id])


async def list_rules(
    session: AsyncSession,
    *,
    merchant_no: str | None = None,
    on: date | None = None,
    include_retired: bool = False,
) -> list[FeeRuleOut]:
    rules = await repository.list_rules(
        session, merchant_no=merchant_no, on=on, include_retired=include_retired
    )
    tiers = await repository.tiers_of(session, [r.id for r in rules])
    return [view(r, tiers[r.id]) for r in rules]


def view(rule: FeeRule, tiers: list[FeeTier]) -> FeeRuleOut:
    return FeeRuleOut(
        id=rule.id, merchant_no=rule.merchant_no, category=rule.category,
        tx_class=rule.tx_class, effective_from=rule.effective_from,
        effective_to=rule.effective_to, per_record=rule.per_record, rate=rule.rate,
        daily=rule.daily, min_fee=rule.min_fee, max_fee=rule.max_fee,
        tiers=[TierOut(amount_from=t.amount_from, amount_to=t.amount_to, rate=t.rate)
               for t in tiers],
        note=rule.note, created_by=rule.created_by, created_at=rule.created_at,
        retired_at=rule.retired_at,
    )  # fmt: skip


# --- the fees of a day --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayFees:
    lines_with_fee: int
    total: int


async def apply_day(session: AsyncSession, day: date) -> DayFees:
    """Fill the fee of each of the day's settlement lines (the nightly ``fees`` step)."""
    await repository.choose_rules(session, day)
    if await repository.lines_with_rule(session, day):
        # Only then read the day's records again: a day without rules costs one statement.
        await repository.set_line_fees(session, day, await repository.line_fees(session, day))
    count, total = await repository.fee_totals(session, day)
    return DayFees(count, total)
