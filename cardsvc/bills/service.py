"""Billers and bill payments (DESIGN §15, docs/bills.md, docs/biller-protocol.md).

The registry of billers is kept by administrators: each change is audited. A biller's key is
shared with the utility and held by the HSM (usage ``biller-mac``); the registry names it by its
label, and registering or changing it checks with the HSM that the label holds such a key.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.audit import service as audit
from cardsvc.bills import patterns
from cardsvc.bills import repository as repo
from cardsvc.bills.models import Biller, BillerStatus
from cardsvc.bills.schemas import BankDetails, BillerChange, BillerIn, FeeRule
from cardsvc.errors import Conflict, DependencyUnavailable, NotFound, ValidationFailed
from cardsvc.hsm import HsmClient, HsmKeyError, HsmUnavailable

BILLER_KEY_USAGE = "biller-mac"


class BillerUnavailable(Conflict):
    """The biller is suspended or closed: no new query or payment."""


async def check_key(hsm: HsmClient, label: str) -> None:
    """The HSM holds an active ``biller-mac`` key under ``label`` (asked before any write)."""
    try:
        info = await hsm.key_info(label)
    except HsmUnavailable as exc:
        raise DependencyUnavailable("HSM unavailable") from exc
    except HsmKeyError as exc:
        raise ValidationFailed(f"the HSM holds no key {label}") from exc
    if info.usage != BILLER_KEY_USAGE or info.state != "active":
        raise ValidationFailed(
            f"key {label} must be an active {BILLER_KEY_USAGE} key, not {info.usage} ({info.state})"
        )


def fee_of(biller: Biller, amount: int) -> int:
    """Our fee on one payment of ``amount`` fen: fixed + amount × bps / 10 000 (rounded down),
    capped at fee_max when it is set, and never more than the amount."""
    fee = biller.fee_fixed + amount * biller.fee_bps // 10_000
    if biller.fee_max:
        fee = min(fee, biller.fee_max)
    return min(fee, amount)


def _audit_view(biller: Biller) -> dict[str, object]:
    return {
        "name": biller.name,
        "category": biller.category.value,
        "endpoint": biller.endpoint,
        "key_label": biller.key_label,
        "bill_key_pattern": biller.bill_key_pattern,
        "bank_account_no": biller.bank_account_no,
        "fee": [biller.fee_fixed, biller.fee_bps, biller.fee_max],
        "settlement_cycle": biller.settlement_cycle.value,
        "status": biller.status.value,
    }


def _apply_bank(biller: Biller, bank: BankDetails) -> None:
    biller.bank_name, biller.bank_account_no = bank.bank_name, bank.account_no
    biller.bank_account_name = bank.account_name


def _apply_fee(biller: Biller, fee: FeeRule) -> None:
    biller.fee_fixed, biller.fee_bps, biller.fee_max = fee.fixed, fee.bps, fee.max


async def create_biller(session: AsyncSession, body: BillerIn, *, actor: str) -> Biller:
    """Register a biller (its key checked with the HSM by the caller, :func:`check_key`)."""
    patterns.check(body.bill_key_pattern)
    if await repo.biller_by_code(session, body.code) is not None:
        raise Conflict(f"biller {body.code} exists")
    now = clock.now()
    biller = Biller(
        code=body.code,
        name=body.name,
        category=body.category,
        endpoint=body.endpoint.rstrip("/"),
        key_label=body.key_label,
        bill_key_pattern=body.bill_key_pattern,
        settlement_cycle=body.settlement_cycle,
        status=BillerStatus.active,
        created_at=now,
        updated_at=now,
    )
    _apply_bank(biller, body.bank)
    _apply_fee(biller, body.fee)
    session.add(biller)
    await session.flush()
    await audit.record(
        session, actor=actor, action="bills.biller_create", entity="biller",
        entity_id=biller.code, after=_audit_view(biller),
    )  # fmt: skip
    return biller


async def change_biller(
    session: AsyncSession, code: str, change: BillerChange, *, actor: str
) -> Biller:
    """Change the fields given (a new key label checked with the HSM by the caller)."""
    biller = await get_biller(session, code, for_update=True)
    before = _audit_view(biller)
    if change.bill_key_pattern is not None:
        patterns.check(change.bill_key_pattern)
        biller.bill_key_pattern = change.bill_key_pattern
    if change.name is not None:
        biller.name = change.name
    if change.endpoint is not None:
        biller.endpoint = change.endpoint.rstrip("/")
    if change.key_label is not None:
        biller.key_label = change.key_label
    if change.bank is not None:
        _apply_bank(biller, change.bank)
    if change.fee is not None:
        _apply_fee(biller, change.fee)
    if change.settlement_cycle is not None:
        biller.settlement_cycle = change.settlement_cycle
    biller.updated_at = clock.now()
    await session.flush()
    await audit.record(
        session, actor=actor, action="bills.biller_change", entity="biller",
        entity_id=biller.code, before=before, after=_audit_view(biller),
    )  # fmt: skip
    return biller


async def set_biller_status(
    session: AsyncSession, code: str, status: BillerStatus, *, actor: str
) -> Biller:
    """Suspend, reopen or close a biller; a closed biller stays closed."""
    biller = await get_biller(session, code, for_update=True)
    if biller.status is BillerStatus.closed and status is not BillerStatus.closed:
        raise Conflict(f"biller {code} is closed")
    before = biller.status
    biller.status, biller.updated_at = status, clock.now()
    await session.flush()
    await audit.record(
        session, actor=actor, action="bills.biller_status", entity="biller",
        entity_id=biller.code, before={"status": before.value}, after={"status": status.value},
    )  # fmt: skip
    return biller


async def get_biller(session: AsyncSession, code: str, *, for_update: bool = False) -> Biller:
    biller = await repo.biller_by_code(session, code, for_update=for_update)
    if biller is None:
        raise NotFound(f"no biller {code}")
    return biller


async def active_biller(session: AsyncSession, code: str) -> Biller:
    biller = await get_biller(session, code)
    if biller.status is not BillerStatus.active:
        raise BillerUnavailable(f"biller {code} is {biller.status.value}")
    return biller


async def list_billers(session: AsyncSession, *, status: BillerStatus | None) -> list[Biller]:
    return await repo.billers(session, status=status)
