"""Online account routes for staff (docs/accounts.md): lookup, balance, statement, the PIN, cash
deposits and withdrawals at counters, and the supervisor's approval of large withdrawals."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.accounts import service
from cardsvc.accounts.models import MovementKind
from cardsvc.accounts.schemas import (
    AccountLookup,
    AccountOut,
    DepositIn,
    MovementOut,
    PinChange,
    PinSet,
    StatementLineOut,
    StatementOut,
    WithdrawalIn,
)
from cardsvc.api.limits import GuardedRoute
from cardsvc.deps import HsmDep, PinPadsDep, SessionDep, SessionsDep, SettingsDep
from cardsvc.errors import DependencyUnavailable
from cardsvc.hsm import HsmUnavailable
from cardsvc.ledger.schemas import Statement
from cardsvc.pinpads import PinPads
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles

router = APIRouter(prefix="/accounts", tags=["online accounts"], route_class=GuardedRoute)

COUNTER_ROLES = (Role.counter_operator, Role.supervisor)
SUPERVISOR_ROLES = (Role.supervisor,)
READER_ROLES = (Role.counter_operator, Role.supervisor, Role.finance, Role.auditor)

Counter = Annotated[StaffPrincipal, Depends(require_roles(*COUNTER_ROLES))]
Supervisor = Annotated[StaffPrincipal, Depends(require_roles(*SUPERVISOR_ROLES))]
Reader = Annotated[StaffPrincipal, Depends(require_roles(*READER_ROLES))]


def account_out(account: service.AccountView) -> AccountOut:
    return AccountOut(
        reference=account.reference,
        resident_id=account.resident_id,
        balance=account.balance,
        held=account.held,
        available=account.available,
        pin_set=account.pin_set,
        pin_locked=account.pin_locked,
        pin_tries_left=account.pin_tries_left,
    )


def movement_out(found: service.MovementView) -> MovementOut:
    row = found.movement
    return MovementOut(
        id=row.id,
        kind=row.kind,
        account_reference=found.reference,
        counter_code=row.counter_code,
        receipt_no=row.receipt_no,
        amount=row.amount,
        status=row.status,
        operator=row.operator,
        approver=row.approver,
        ledger_transaction_id=row.ledger_transaction_id,
        clearing_date=row.clearing_date,
        created_at=row.created_at,
        decided_at=row.decided_at,
        replayed=found.replayed,
    )


def statement_out(reference: str, found: Statement) -> StatementOut:
    return StatementOut(
        account_reference=reference,
        opening_balance=found.opening_balance,
        lines=[
            StatementLineOut(
                line_id=line.line_id,
                posted_at=line.posted_at,
                clearing_date=line.clearing_date,
                tx_type=line.tx_type,
                amount=line.amount,
                balance_after=line.balance_after,
                description=line.description,
            )
            for line in found.lines
        ],
        next_after=found.next_after,
    )


async def pin_entry(
    session: AsyncSession, pin_pads: PinPads, card_no: str, terminal_no: str, pin_block: str
) -> service.PinEntry:
    key = await pin_pads.counter_pin_key(session, terminal_no)
    return service.PinEntry(key, bytes.fromhex(pin_block), card_no)


@router.post(
    "/lookup",
    response_model=AccountOut,
    summary="The account of a card's holder, opened on first use (counter, supervisor, finance, "
    "auditor)",
)
async def lookup(
    body: AccountLookup, principal: Reader, session: SessionDep, settings: SettingsDep
) -> AccountOut:
    # POST: a card number stays out of URLs (access logs, proxies).
    account = await service.for_card(session, settings, body.card_no)
    return account_out(await service.view(session, settings, account))


@router.get(
    "/{reference}",
    response_model=AccountOut,
    summary="Balance and PIN status (counter, supervisor, finance, auditor)",
)
async def get_account(
    reference: str, principal: Reader, session: SessionDep, settings: SettingsDep
) -> AccountOut:
    account = await service.by_reference(session, reference)
    return account_out(await service.view(session, settings, account))


@router.get(
    "/{reference}/statement",
    response_model=StatementOut,
    summary="Paged statement, oldest first, local dates inclusive (counter, supervisor, finance, "
    "auditor)",
)
async def get_statement(
    reference: str,
    principal: Reader,
    session: SessionDep,
    settings: SettingsDep,
    from_date: date | None = None,
    to_date: date | None = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> StatementOut:
    account = await service.by_reference(session, reference)
    found = await service.statement(
        session, settings, account, from_date=from_date, to_date=to_date, after=after, limit=limit
    )
    return statement_out(reference, found)


@router.post(
    "/{reference}/pin",
    response_model=AccountOut,
    summary="Set or reset the online PIN from the counter's PIN pad; lifts a lock (counter, "
    "supervisor)",
)
async def set_pin(
    reference: str,
    body: PinSet,
    principal: Counter,
    session: SessionDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    hsm: HsmDep,
    pin_pads: PinPadsDep,
) -> AccountOut:
    # What the HSM needs is read first, in a short session closed before the HSM works.
    async with sessions() as read:
        account = await service.by_reference(read, reference)
        target = await service.pin_target(read, account, body.card_no)
        entry = await pin_entry(read, pin_pads, target.card_no, body.terminal_no, body.pin_block)
    made = await service.make_pin(hsm, settings, target, entry)
    found = await service.store_pin(session, settings, target, made, actor=principal.username)
    return account_out(found)


@router.post(
    "/{reference}/pin/change",
    response_model=AccountOut,
    summary="The holder changes the online PIN at a counter: the old PIN, then the new one, both "
    "from the counter's PIN pad (counter, supervisor)",
)
async def change_pin(
    reference: str,
    body: PinChange,
    principal: Counter,
    session: SessionDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    hsm: HsmDep,
    pin_pads: PinPadsDep,
) -> AccountOut:
    async with sessions() as read:
        account = await service.by_reference(read, reference)
        target = await service.pin_target(read, account, body.card_no)
        old = await pin_entry(read, pin_pads, target.card_no, body.terminal_no, body.old_pin_block)
        new = await pin_entry(read, pin_pads, target.card_no, body.terminal_no, body.pin_block)
    # The old PIN counts like any other (wrong ones are tries, and a locked PIN stays locked:
    # only a reset with an identity document lifts it); the HSM then checks the new one's rules.
    service.require_verified(
        await service.check_pin(sessions, hsm, settings, target.resident_id, old)
    )
    made = await service.make_pin(hsm, settings, target, new)
    found = await service.store_pin(
        session, settings, target, made, actor=principal.username, changed_by_holder=True
    )
    return account_out(found)


@router.post(
    "/{reference}/deposits",
    response_model=MovementOut,
    summary="Cash paid in at a counter, once per receipt number (counter, supervisor)",
)
async def deposit(
    reference: str,
    body: DepositIn,
    principal: Counter,
    session: SessionDep,
    settings: SettingsDep,
) -> MovementOut:
    account = await service.by_reference(session, reference)
    found = await service.deposit(
        session,
        settings,
        account,
        counter_code=body.counter_code,
        receipt_no=body.receipt_no,
        amount=body.amount,
        actor=principal.username,
    )
    return movement_out(found)


@router.post(
    "/{reference}/withdrawals",
    response_model=MovementOut,
    summary="Cash paid out at a counter after the cardholder's PIN; above the approval amount it "
    "waits for a supervisor (counter, supervisor)",
)
async def withdraw(
    reference: str,
    body: WithdrawalIn,
    principal: Counter,
    session: SessionDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    hsm: HsmDep,
    pin_pads: PinPadsDep,
) -> MovementOut:
    async with sessions() as read:
        account = await service.by_reference(read, reference)
        replay = await service.find_movement(
            read, MovementKind.withdrawal, account, counter_code=body.counter_code,
            receipt_no=body.receipt_no, amount=body.amount,
        )  # fmt: skip
        if replay is not None:  # a retry: the first answer, without the PIN again
            return movement_out(replay)
        target = await service.pin_target(read, account, body.card_no)
        entry = await pin_entry(read, pin_pads, target.card_no, body.terminal_no, body.pin_block)
    try:
        check = await service.check_pin(sessions, hsm, settings, target.resident_id, entry)
    except HsmUnavailable as exc:
        raise DependencyUnavailable("HSM unavailable") from exc
    found = await service.withdraw(
        session,
        settings,
        await service.by_reference(session, reference),
        check,
        card_no=target.card_no,
        counter_code=body.counter_code,
        receipt_no=body.receipt_no,
        amount=body.amount,
        actor=principal.username,
    )
    return movement_out(found)


@router.get(
    "/movements/{movement_id}",
    response_model=MovementOut,
    summary="A deposit or withdrawal (counter, supervisor, finance, auditor)",
)
async def get_movement(
    movement_id: Annotated[int, Path(ge=1, le=2**62)], principal: Reader, session: SessionDep
) -> MovementOut:
    return movement_out(await service.movement_view(session, movement_id))


@router.post(
    "/withdrawals/{movement_id}/approve",
    response_model=MovementOut,
    summary="Pay out a held withdrawal (supervisor; not its operator)",
)
async def approve(
    movement_id: Annotated[int, Path(ge=1, le=2**62)],
    principal: Supervisor,
    session: SessionDep,
    settings: SettingsDep,
) -> MovementOut:
    found = await service.approve_withdrawal(
        session, settings, movement_id, actor=principal.username
    )
    return movement_out(found)


@router.post(
    "/withdrawals/{movement_id}/reject",
    response_model=MovementOut,
    summary="Refuse a held withdrawal; the money is released (supervisor)",
)
async def reject(
    movement_id: Annotated[int, Path(ge=1, le=2**62)], principal: Supervisor, session: SessionDep
) -> MovementOut:
    found = await service.reject_withdrawal(session, movement_id, actor=principal.username)
    return movement_out(found)
