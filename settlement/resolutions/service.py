"""Resolving break items by maker-checker (docs/finance-pages.md, "Breaks").

A finance user proposes how a break is resolved; a *second* finance user approves (nobody
approves their own proposal) or rejects it. The ledger moves only on approval, through the
ledger service, under the key ``break-resolution:<proposal id>`` (a retried approval posts
nothing twice). The money of a break waits in the suspense account of its kind; an approval
moves the proposed amount from there to its destination:

=================  ============================================
action             credit
=================  ============================================
write_off          ``break_written_off`` (the operator's result)
adjust_merchant    ``merchant_pending:<merchant id>``
refund_card        ``card_transfer:<card number>`` (loaded onto the chip at a counter later)
refund_resident    ``resident_account:<resident id>``
reexamine          nothing: the break stays open for its domain
=================  ============================================

Lock order: the proposal row, then the break row, then the ledger accounts. Every proposal and
decision is audited. Services never commit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.accounts import service as accounts
from cardsvc.audit import service as audit
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind, BreakStatus
from cardsvc.breaks.schemas import BreakView, Resolve
from cardsvc.cards import service as cards
from cardsvc.cards.numbers import check_card_no
from cardsvc.clearing.service import clearing_date
from cardsvc.errors import (
    DomainError,
    Forbidden,
    InvalidStateTransition,
    NotFound,
    ValidationFailed,
)
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.settings import Settings
from cardsvc.staff.auth import Role, StaffPrincipal, check_roles
from settlement.resolutions import repository
from settlement.resolutions.models import Action, BreakProposal, ProposalStatus
from settlement.resolutions.schemas import Decision, NewProposal, ProposalView

MAX_BATCH = 100
_MERCHANT_ID = re.compile(r"^\d{15}$")
_RESIDENT_ID = re.compile(r"^[1-9]\d{0,17}$")

# Where the money of a break waits until it is resolved.
SUSPENSE: dict[BreakKind, AccountKind] = {
    BreakKind.gray: AccountKind.suspense_gray,
    BreakKind.tac_failed: AccountKind.suspense_gray,
    BreakKind.refused_paid: AccountKind.suspense_gray,
    BreakKind.unmatched_bank_credit: AccountKind.suspense_bank,
    BreakKind.bank_credit_conflict: AccountKind.suspense_bank,
    BreakKind.unmatched_bank_line: AccountKind.suspense_bank,
    BreakKind.bank_line_differs: AccountKind.suspense_bank,
}
RESOLUTION_CODE: dict[Action, str] = {
    Action.write_off: "written_off",
    Action.adjust_merchant: "adjusted_to_merchant",
    Action.refund_card: "refunded_to_card",
    Action.refund_resident: "refunded_to_resident",
}


def suspense_of(kind: str) -> AccountKind:
    try:
        return SUSPENSE[BreakKind(kind)]
    except (KeyError, ValueError):
        return AccountKind.suspense_short


class OwnProposal(Forbidden):
    """The approver made the proposal: a second person must approve it."""


def posting_key(proposal_id: int) -> str:
    return f"break-resolution:{proposal_id}"


async def _check_target(session: AsyncSession, action: Action, target: str | None) -> str | None:
    if action in (Action.write_off, Action.reexamine):
        if target:
            raise ValidationFailed(f"{action.value} takes no target")
        return None
    if not target:
        raise ValidationFailed(f"{action.value} needs a target")
    target = target.strip()
    if action is Action.adjust_merchant:
        if not _MERCHANT_ID.match(target):
            raise ValidationFailed("a merchant id is 15 digits")
    elif action is Action.refund_card:
        await cards.require_card(session, check_card_no(target), for_update=False)
    elif action is Action.refund_resident:
        if not _RESIDENT_ID.match(target):
            raise ValidationFailed("a resident id is a positive integer")
        if await accounts.for_resident(session, int(target)) is None:
            raise NotFound(f"resident {target} has no online account")
    return target


def _credit(action: Action, target: str | None) -> AccountRef:
    if action is Action.write_off:
        return AccountRef(AccountKind.break_written_off)
    if action is Action.adjust_merchant:
        return AccountRef(AccountKind.merchant_pending, target or "")
    if action is Action.refund_card:
        return AccountRef(AccountKind.card_transfer, target or "")
    return AccountRef(AccountKind.resident_account, target or "")


def _finance(principal: StaffPrincipal) -> None:
    check_roles(principal, (Role.finance,))


async def propose(
    session: AsyncSession, principal: StaffPrincipal, break_id: int, new: NewProposal
) -> ProposalView:
    """Propose a resolution of an open break that has no other proposal waiting."""
    _finance(principal)
    item = await breaks.lock_break(session, break_id)
    if item.status is not BreakStatus.open:
        raise InvalidStateTransition(f"break item {break_id} is already {item.status.value}")
    if await repository.pending_of(session, [break_id]):
        raise InvalidStateTransition(f"break item {break_id} already has a proposal waiting")
    amount = new.amount
    if new.action is Action.reexamine:
        if amount is not None:
            raise ValidationFailed("a re-examination moves no money: give no amount")
    else:
        amount = amount if amount is not None else item.amount
        if amount is None:
            raise ValidationFailed(f"{new.action.value} needs an amount (fen)")
        if item.amount is not None and amount > item.amount:
            raise ValidationFailed(f"at most the break's amount, {item.amount} fen")
    target = await _check_target(session, new.action, new.target)
    proposal = await repository.add(
        session,
        BreakProposal(
            break_id=break_id,
            action=new.action,
            amount=amount,
            target=target,
            note=new.note,
            status=ProposalStatus.proposed,
            proposed_by_id=principal.id,
            proposed_by=principal.username,
            proposed_at=clock.now(),
        ),
    )
    await audit.record(
        session,
        actor=principal.username,
        action="break.propose",
        entity="break_proposal",
        entity_id=str(proposal.id),
        after={"break_id": break_id, "action": new.action.value, "amount": amount},
    )
    return ProposalView.model_validate(proposal)


async def _decidable(
    session: AsyncSession, principal: StaffPrincipal, proposal_id: int
) -> BreakProposal:
    _finance(principal)
    proposal = await repository.get(session, proposal_id, for_update=True)
    if proposal is None:
        raise NotFound(f"no proposal {proposal_id}")
    if proposal.status is not ProposalStatus.proposed:
        raise InvalidStateTransition(f"proposal {proposal_id} is already {proposal.status.value}")
    return proposal


async def approve(
    session: AsyncSession, settings: Settings, principal: StaffPrincipal, proposal_id: int
) -> ProposalView:
    """Approve another user's proposal: the ledger moves and the break is resolved."""
    proposal = await _decidable(session, principal, proposal_id)
    if proposal.proposed_by_id == principal.id:
        raise OwnProposal("nobody approves their own proposal: a second finance user must")
    item: BreakView = await breaks.lock_break(session, proposal.break_id)
    if item.status is not BreakStatus.open:
        raise InvalidStateTransition(f"break item {item.id} is already {item.status.value}")
    if proposal.action is not Action.reexamine:
        assert proposal.amount is not None  # noqa: S101 - propose() requires one
        posted = await ledger.post(
            session,
            PostingRequest(
                idempotency_key=posting_key(proposal.id),
                tx_type="break_resolution",
                clearing_date=await clearing_date(session, settings),
                entries=(
                    Entry(AccountRef(suspense_of(item.kind)), Side.debit, proposal.amount),
                    Entry(_credit(proposal.action, proposal.target), Side.credit, proposal.amount),
                ),
                record_ref=f"break_proposal:{proposal.id}",
                description=f"break {item.id}: {proposal.action.value}",
            ),
        )
        proposal.ledger_transaction_id = posted.id
        await breaks.resolve(
            session,
            item.id,
            Resolve(
                resolver=principal.username,
                resolution=RESOLUTION_CODE[proposal.action],
                note=proposal.note,
            ),
        )
    proposal.status = ProposalStatus.approved
    proposal.decided_by_id, proposal.decided_by = principal.id, principal.username
    proposal.decided_at = clock.now()
    await session.flush()
    await audit.record(
        session,
        actor=principal.username,
        action="break.approve",
        entity="break_proposal",
        entity_id=str(proposal.id),
        after={
            "break_id": item.id,
            "action": proposal.action.value,
            "amount": proposal.amount,
            "ledger_transaction_id": proposal.ledger_transaction_id,
        },
    )
    return ProposalView.model_validate(proposal)


async def reject(
    session: AsyncSession, principal: StaffPrincipal, proposal_id: int
) -> ProposalView:
    """Reject a proposal (its maker may withdraw it the same way): nothing moves."""
    proposal = await _decidable(session, principal, proposal_id)
    proposal.status = ProposalStatus.rejected
    proposal.decided_by_id, proposal.decided_by = principal.id, principal.username
    proposal.decided_at = clock.now()
    await session.flush()
    await audit.record(
        session,
        actor=principal.username,
        action="break.reject",
        entity="break_proposal",
        entity_id=str(proposal.id),
        after={"break_id": proposal.break_id},
    )
    return ProposalView.model_validate(proposal)


async def approve_many(
    session: AsyncSession,
    settings: Settings,
    principal: StaffPrincipal,
    proposal_ids: Sequence[int],
) -> list[Decision]:
    """Approve several proposals, each in a savepoint of its own: one that is refused (your own,
    decided already, funds short) leaves the others approved and says why."""
    _finance(principal)
    if len(proposal_ids) > MAX_BATCH:
        raise ValidationFailed(f"at most {MAX_BATCH} proposals at once")
    decisions = []
    for proposal_id in dict.fromkeys(proposal_ids):
        try:
            async with session.begin_nested():
                await approve(session, settings, principal, proposal_id)
        except DomainError as exc:
            decisions.append(
                Decision(
                    proposal_id=proposal_id, ok=False, error=type(exc).__name__, detail=exc.detail
                )
            )
        else:
            decisions.append(Decision(proposal_id=proposal_id, ok=True))
    return decisions


async def of_break(session: AsyncSession, break_id: int) -> list[ProposalView]:
    return [ProposalView.model_validate(p) for p in await repository.of_break(session, break_id)]


async def pending(session: AsyncSession, *, limit: int = MAX_BATCH) -> list[ProposalView]:
    return [ProposalView.model_validate(p) for p in await repository.pending(session, limit=limit)]


async def pending_of(session: AsyncSession, break_ids: Sequence[int]) -> set[int]:
    return await repository.pending_of(session, break_ids)
