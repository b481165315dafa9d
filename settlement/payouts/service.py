"""Payees and payouts (docs/payouts.md).

A merchant's payee row holds its settlement cycle and bank details (none: daily, no bank
details). The ``postings`` step of a day makes the day's payouts; the bank file lists the due
ones and, once it is in place, :func:`issue_payouts` posts each (payable -> bank) and marks it
issued. A merchant without bank details is held: never paid to nowhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.audit import service as audit
from cardsvc.clearing import service as clearing
from cardsvc.db import unit_of_work
from cardsvc.errors import Conflict, InvalidStateTransition, NotFound, ValidationFailed
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.settings import Settings
from settlement.payouts import repository
from settlement.payouts.models import Cycle, PayeeKind, PayoutStatus, SettlementPayee
from settlement.payouts.repository import PayoutLine, PayoutRef, PayoutTotals
from settlement.payouts.schemas import PayeeIn, PayeeOut

POSTING_TX_TYPE = "settlement_payout"
BANK_FILE_STATUSES = (PayoutStatus.due, PayoutStatus.issued, PayoutStatus.confirmed)

__all__ = ["PayoutLine", "PayoutRef", "PayoutTotals"]


class PayeeInvalid(ValidationFailed):
    """Payee details that parsed but cannot stand (422)."""


class PayoutBankMissing(Conflict):
    """No bank account to pay from: neither CARDSVC_SETTLEMENT_PAYOUT_BANK nor a bank code."""


def payout_key(day: date, merchant_no: str) -> str:
    return f"settlement:{day.isoformat()}:{merchant_no}:payout"


def biller_payout_key(day: date, code: str) -> str:
    return f"settlement:{day.isoformat()}:biller:{code}:payout"


def reference(day: date, merchant_no: str) -> str:
    """``P<YYYYMMDD><merchant_no>``: 24 characters, unique per payout (one per merchant and day)."""
    return repository.reference(day, merchant_no)


def payout_bank(settings: Settings) -> str:
    code = settings.settlement_payout_bank or (
        settings.bank_codes[0] if settings.bank_codes else ""
    )
    if not code:
        raise PayoutBankMissing(
            "no bank account to pay merchants from: set CARDSVC_SETTLEMENT_PAYOUT_BANK"
        )
    return code


# --- payees ---------------------------------------------------------------------------------


def check(body: PayeeIn) -> None:
    """Beyond the field ranges, in this order."""
    if body.cycle is Cycle.daily and body.cycle_day is not None:
        raise PayeeInvalid("a daily cycle takes no cycle_day")
    if body.cycle is Cycle.weekly and not (body.cycle_day and 1 <= body.cycle_day <= 7):
        raise PayeeInvalid("a weekly cycle needs cycle_day 1 (Monday) to 7 (Sunday)")
    if body.cycle is Cycle.monthly and not (body.cycle_day and 1 <= body.cycle_day <= 31):
        raise PayeeInvalid("a monthly cycle needs cycle_day 1 to 31")
    bank = (body.bank_name, body.bank_branch, body.account_no, body.account_holder)
    if any(v is not None for v in bank) and any(v is None for v in bank):
        raise PayeeInvalid(
            "bank details are all four (bank_name, bank_branch, account_no, account_holder) or none"
        )


async def set_payee(
    session: AsyncSession, merchant_no: str, body: PayeeIn, *, actor: str
) -> PayeeOut:
    check(body)
    name = await repository.merchant_name(session, merchant_no)
    if name is None:
        raise NotFound(f"merchant {merchant_no} not found")
    payee = await repository.get_payee(session, merchant_no, for_update=True)
    before = _audit_view(payee) if payee is not None else None
    if payee is None:
        payee = SettlementPayee(merchant_no=merchant_no)
        repository.add_payee(session, payee)
    payee.cycle = body.cycle
    payee.cycle_day = body.cycle_day
    payee.bank_name = body.bank_name
    payee.bank_branch = body.bank_branch
    payee.account_no = body.account_no
    payee.account_holder = body.account_holder
    payee.updated_by = actor
    payee.updated_at = clock.now()
    await session.flush()
    # The audit names what changed, never the account number itself.
    await audit.record(
        session,
        actor=actor,
        action="payee.set",
        entity="merchant",
        entity_id=merchant_no,
        before=before,
        after=_audit_view(payee),
    )
    return view(merchant_no, name, payee)


def _audit_view(payee: SettlementPayee) -> dict[str, object]:
    return {
        "cycle": payee.cycle.value,
        "cycle_day": payee.cycle_day,
        "bank_details": payee.account_no is not None,
    }


async def get_payee(session: AsyncSession, merchant_no: str) -> PayeeOut:
    name = await repository.merchant_name(session, merchant_no)
    if name is None:
        raise NotFound(f"merchant {merchant_no} not found")
    return view(merchant_no, name, await repository.get_payee(session, merchant_no))


async def list_payees(session: AsyncSession) -> list[PayeeOut]:
    return [
        view(r.merchant_no, r.merchant_name, r.payee) for r in await repository.list_payees(session)
    ]


def view(merchant_no: str, name: str, payee: SettlementPayee | None) -> PayeeOut:
    if payee is None:
        return PayeeOut(
            merchant_no=merchant_no,
            merchant_name=name,
            cycle=Cycle.daily,
            cycle_day=None,
            bank_name=None,
            bank_branch=None,
            account_no=None,
            account_holder=None,
            held=True,
        )
    return PayeeOut(
        merchant_no=merchant_no,
        merchant_name=name,
        cycle=payee.cycle,
        cycle_day=payee.cycle_day,
        bank_name=payee.bank_name,
        bank_branch=payee.bank_branch,
        account_no=payee.account_no,
        account_holder=payee.account_holder,
        held=payee.account_no is None,
    )


# --- the day's payouts ----------------------------------------------------------------------


async def make_day_payouts(session: AsyncSession, day: date) -> PayoutTotals:
    """The payouts of ``day`` (the nightly ``postings`` step, once every batch is posted): the
    merchants' and the billers'."""
    now = clock.now()
    await repository.make_payouts(session, day, now)
    await repository.make_biller_payouts(session, day, now)
    return await repository.payout_totals(session, day)


async def totals(session: AsyncSession, day: date) -> PayoutTotals:
    return await repository.payout_totals(session, day)


async def problems(session: AsyncSession, day: date) -> list[str]:
    """What does not balance in the day's payouts (for the day's money check)."""
    if unbalanced := await repository.unbalanced_payouts(session, day):
        return [f"{unbalanced} payout(s) whose amount is not the net of the batches they pay"]
    return []


def bank_file_payouts(session: AsyncSession, day: date) -> AsyncIterator[PayoutLine]:
    """The rows of the day's bank file: due, issued and confirmed payouts (never held ones), by
    reference. Issued ones stay in, so that a rerun writes the same file."""
    return repository.stream_payouts(session, day, BANK_FILE_STATUSES)


async def held_payouts(session: AsyncSession, day: date) -> list[PayoutLine]:
    return await repository.list_payouts(session, day, [PayoutStatus.held])


async def day_payouts(session: AsyncSession, day: date) -> list[PayoutLine]:
    return await repository.list_payouts(session, day, list(PayoutStatus))


@dataclass(frozen=True, slots=True)
class IssueResult:
    issued: int
    amount: int


async def issue_payouts(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    day: date,
    crash_point: Callable[[str], None] | None = None,
) -> IssueResult:
    """Post each due payout of ``day`` (payable -> bank) and mark it issued; call it once the bank
    file is in place. Chunks of ``CARDSVC_SETTLEMENT_POSTING_CHUNK`` payouts commit on their own;
    each posting has the key ``settlement:<D>:<merchant_no>:payout``, so a rerun after a crash
    issues only what is left and nothing twice."""
    bank = AccountRef(AccountKind.bank, payout_bank(settings))
    chunk = issued = amount = 0
    while True:
        async with unit_of_work(sessions) as work:
            due = await repository.due_payouts(work, day, settings.settlement_posting_chunk)
            if not due:
                break
            posting_day = await clearing.clearing_date(work, settings)
            for payout in due:
                posted = await ledger.post(work, _posting(day, posting_day, payout, bank))
                await repository.mark_issued(work, payout.reference, posted.id, clock.now())
                issued += 1
                amount += payout.amount
            chunk += 1
            if crash_point is not None:
                crash_point(f"payouts:{chunk}:uncommitted")
        if crash_point is not None:
            crash_point(f"payouts:{chunk}")
    return IssueResult(issued, amount)


def _posting(day: date, posting_day: date, payout: PayoutLine, bank: AccountRef) -> PostingRequest:
    if payout.payee_kind is PayeeKind.biller:
        payable = AccountRef(AccountKind.biller_payable, payout.merchant_no)
        key = biller_payout_key(day, payout.merchant_no)
    else:
        payable = AccountRef(AccountKind.merchant_payable, payout.merchant_no)
        key = payout_key(day, payout.merchant_no)
    return PostingRequest(
        idempotency_key=key,
        tx_type=POSTING_TX_TYPE,
        clearing_date=posting_day,
        entries=[
            Entry(payable, Side.debit, payout.amount),
            Entry(bank, Side.credit, payout.amount),
        ],
        record_ref=f"settlement_payout:{payout.reference}",
        description=f"payout {payout.reference}",
    )


# --- the bank's statement -------------------------------------------------------------------


async def by_references(session: AsyncSession, references: Sequence[str]) -> dict[str, PayoutRef]:
    """The payouts of these references (those that exist), locked for the caller's
    transaction, for matching a bank statement's lines."""
    return {p.reference: p for p in await repository.by_references(session, references)}


async def confirm(session: AsyncSession, reference: str, *, evidence: str, actor: str) -> None:
    """The bank's statement shows the payout paid: ``issued`` -> ``confirmed`` (audited)."""
    if not await repository.mark_confirmed(session, reference, clock.now()):
        found = await repository.by_references(session, [reference])
        if not found:
            raise NotFound(f"payout {reference} not found")
        raise InvalidStateTransition(
            f"payout {reference} is {found[0].status.value}: only an issued payout is confirmed"
        )
    await audit.record(
        session, actor=actor, action="payout.confirm", entity="payout", entity_id=reference,
        after={"evidence": evidence[:200]},
    )  # fmt: skip
