"""All SQL of the fee rules, and the fees of a settled day computed in the database.

The fee of a line is the sum of the fees of its records (each rounded half-up to a fen on its
own) plus the rule's daily fee: one ``SELECT ... GROUP BY`` over the day's records (one
partition on PostgreSQL) joined to the line's rule and its tiers; Python receives one row per
line, never a record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    SQLColumnExpression,
    Table,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import Subquery

from cardsvc.ledger.models import AccountKind, LedgerAccount, LedgerLine, LedgerTransaction, Side
from settlement.fees.models import RATE_UNITS, FeeRule, FeeTier
from settlement.nightly.models import SettlementLine, SettlementStep, Step
from terminals.registry.models import Merchant
from terminals.uploads.models import CLAIMING_CODES, OfflineRecord

OFFLINE_CLASS = "offline"
# Ledger transaction types that reach a merchant's pending account but are not the day's trade
# (kept in step with the clear step: these are never lines).
NOT_TRADE = ("purchase_batch", "settlement")

# --- rules ----------------------------------------------------------------------------------


async def add_rule(session: AsyncSession, rule: FeeRule, tiers: Sequence[FeeTier]) -> FeeRule:
    session.add(rule)
    await session.flush()
    for tier in tiers:
        tier.rule_id = rule.id
        session.add(tier)
    await session.flush()
    return rule


async def get_rule(
    session: AsyncSession, rule_id: int, *, for_update: bool = False
) -> FeeRule | None:
    stmt = select(FeeRule).where(FeeRule.id == rule_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_rules(
    session: AsyncSession,
    *,
    merchant_no: str | None = None,
    on: date | None = None,
    include_retired: bool = False,
    limit: int = 500,
) -> Sequence[FeeRule]:
    stmt = select(FeeRule)
    if merchant_no is not None:
        stmt = stmt.where(FeeRule.merchant_no == merchant_no)
    if on is not None:
        stmt = stmt.where(in_force(on))
    if not include_retired:
        stmt = stmt.where(FeeRule.retired_at.is_(None))
    stmt = stmt.order_by(FeeRule.id).limit(limit)
    return (await session.execute(stmt)).scalars().all()


async def tiers_of(session: AsyncSession, rule_ids: Sequence[int]) -> dict[int, list[FeeTier]]:
    out: dict[int, list[FeeTier]] = {i: [] for i in rule_ids}
    if not rule_ids:
        return out
    stmt = (
        select(FeeTier)
        .where(FeeTier.rule_id.in_(list(rule_ids)))
        .order_by(FeeTier.rule_id, FeeTier.amount_from)
    )
    for tier in (await session.execute(stmt)).scalars():
        out[tier.rule_id].append(tier)
    return out


async def latest_fees_day(session: AsyncSession) -> date | None:
    """The latest clearing date whose fees were computed (a rule starting then or earlier would
    never be applied to it)."""
    stmt = select(func.max(SettlementStep.clearing_date)).where(SettlementStep.step == Step.fees)
    found: date | None = (await session.execute(stmt)).scalar_one()
    return found


async def merchant_exists(session: AsyncSession, merchant_no: str) -> bool:
    stmt = select(Merchant.id).where(Merchant.merchant_no == merchant_no)
    return (await session.execute(stmt)).first() is not None


# --- which rule, and the fee of a record ----------------------------------------------------


def in_force(day: date | ColumnElement[date]) -> ColumnElement[bool]:
    return and_(
        FeeRule.retired_at.is_(None),
        FeeRule.effective_from <= day,
        or_(FeeRule.effective_to.is_(None), FeeRule.effective_to >= day),
    )


def rule_for(
    day: date,
    merchant_no: SQLColumnExpression[str],
    category: SQLColumnExpression[str],
    tx_class: SQLColumnExpression[str],
) -> ColumnElement[int]:
    """The id of the rule of one merchant's class on ``day`` (null: none, the fee is 0).

    A merchant's rule beats its category's, which beats a default; at one level a rule of the
    class beats one of every class; then the latest ``effective_from``, then the latest rule.
    """
    f = FeeRule
    level = case((f.merchant_no.is_not(None), 0), (f.category.is_not(None), 1), else_=2)
    return (
        select(f.id)
        .where(
            in_force(day),
            or_(f.tx_class.is_(None), f.tx_class == tx_class),
            or_(
                f.merchant_no == merchant_no,
                and_(f.merchant_no.is_(None), or_(f.category.is_(None), f.category == category)),
            ),
        )
        .order_by(
            level, case((f.tx_class.is_(None), 1), else_=0), f.effective_from.desc(), f.id.desc()
        )
        .limit(1)
        .scalar_subquery()
    )


def record_fee(amount: ColumnElement[int]) -> ColumnElement[int]:
    """The fee of one record of ``amount`` fen under the joined rule (``FeeRule``) and its tier
    (``FeeTier``, outer-joined on the amount's band): per record + amount x rate, rounded half-up
    to a fen, then held within the rule's minimum and maximum. A record of no positive amount (a
    refund) pays nothing."""
    f = FeeRule
    rate = func.coalesce(FeeTier.rate, f.rate)
    half = RATE_UNITS // 2
    # Integer division of non-negative integers truncates (floor) on PostgreSQL and SQLite alike,
    # so adding half a unit first rounds half-up.
    base = f.per_record + (cast(amount, BigInteger) * rate + half) / RATE_UNITS
    held = case(
        (and_(f.min_fee.is_not(None), base < f.min_fee), f.min_fee),
        (and_(f.max_fee.is_not(None), base > f.max_fee), f.max_fee),
        else_=base,
    )
    return case((amount > 0, held), else_=literal(0))


def tier_of(amount: ColumnElement[int]) -> ColumnElement[bool]:
    return and_(
        FeeTier.rule_id == FeeRule.id,
        FeeTier.amount_from <= amount,
        or_(FeeTier.amount_to.is_(None), amount < FeeTier.amount_to),
    )


# --- the fees step ----------------------------------------------------------------------------


async def choose_rules(session: AsyncSession, day: date) -> None:
    """Stamp each of the day's lines with its rule (null when none applies)."""
    line = SettlementLine
    # Correlated to the line being updated, through the rule's subquery it sits in.
    category = (
        select(Merchant.category)
        .where(Merchant.id == line.merchant_id)
        .correlate(line)
        .scalar_subquery()
    )
    await session.execute(
        update(line)
        .where(line.clearing_date == day)
        .values(fee_rule_id=rule_for(day, line.merchant_no, category, line.tx_class))
    )


@dataclass(frozen=True, slots=True)
class LineFee:
    merchant_no: str
    tx_class: str
    fee: int


def _fees_of(amounts: Subquery, day: date) -> Select[str, str, int]:
    """Per line: the sum of its records' fees, plus the daily fee once it has a paying record."""
    line, f = SettlementLine, FeeRule
    amount = amounts.c.amount
    paying = func.sum(case((amount > 0, 1), else_=0))
    return (
        select(
            line.merchant_no,
            line.tx_class,
            func.coalesce(func.sum(record_fee(amount)), 0)
            + case((paying > 0, func.max(f.daily)), else_=0),
        )
        .select_from(amounts)
        .join(
            line,
            and_(
                line.clearing_date == day,
                line.merchant_no == amounts.c.merchant_no,
                line.tx_class == amounts.c.tx_class,
            ),
        )
        .join(f, f.id == line.fee_rule_id)
        .outerjoin(FeeTier, tier_of(amount))
        .group_by(line.merchant_no, line.tx_class)
    )


def offline_amounts(day: date) -> Subquery:
    r = OfflineRecord
    return (
        select(
            Merchant.merchant_no.label("merchant_no"),
            literal(OFFLINE_CLASS).label("tx_class"),
            r.amount.label("amount"),
        )
        .join(Merchant, Merchant.id == r.merchant_id)
        .where(r.clearing_date == day, r.result_code.in_(sorted(CLAIMING_CODES)))
        .subquery("offline_amounts")
    )


def journal_amounts(day: date) -> Subquery:
    """Each online transaction's movement of a merchant's pending account (its record)."""
    t, ln, account = LedgerTransaction, LedgerLine, LedgerAccount
    signed = case((ln.side == Side.credit, ln.amount), else_=-ln.amount)
    return (
        select(
            account.owner_ref.label("merchant_no"),
            t.tx_type.label("tx_class"),
            func.sum(signed).label("amount"),
        )
        .select_from(ln)
        .join(account, account.id == ln.account_id)
        .join(t, and_(t.id == ln.transaction_id, t.clearing_date == day))
        .where(
            ln.clearing_date == day,
            account.kind == AccountKind.merchant_pending,
            t.tx_type.not_in(NOT_TRADE),
        )
        .group_by(account.owner_ref, t.tx_type, t.id)
        .subquery("journal_amounts")
    )


async def line_fees(session: AsyncSession, day: date) -> list[LineFee]:
    out: list[LineFee] = []
    for amounts in (offline_amounts(day), journal_amounts(day)):
        rows = await session.execute(_fees_of(amounts, day))
        out.extend(LineFee(m, c, int(fee)) for m, c, fee in rows.all())
    return out


async def set_line_fees(session: AsyncSession, day: date, fees: Sequence[LineFee]) -> None:
    if not fees:
        return
    table: Table = SettlementLine.__table__  # type: ignore[assignment]
    stmt = (
        update(table)
        .where(
            table.c.clearing_date == day,
            table.c.merchant_no == bindparam("m"),
            table.c.tx_class == bindparam("c"),
        )
        .values(fee=bindparam("f"))
    )
    # One statement, many parameter sets (an executemany): one round trip per chunk of lines.
    await session.execute(stmt, [{"m": f.merchant_no, "c": f.tx_class, "f": f.fee} for f in fees])


async def lines_with_rule(session: AsyncSession, day: date) -> int:
    line = SettlementLine
    stmt = select(func.count()).where(line.clearing_date == day, line.fee_rule_id.is_not(None))
    return int((await session.execute(stmt)).scalar_one())


async def fee_totals(session: AsyncSession, day: date) -> tuple[int, int]:
    line = SettlementLine
    stmt = select(func.count().filter(line.fee != 0), func.coalesce(func.sum(line.fee), 0)).where(
        line.clearing_date == day
    )
    count, total = (await session.execute(stmt)).one()
    return int(count), int(total)
