"""Card routes: lookup and the lifecycle transitions of DESIGN §8."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from cardsvc.api.limits import GuardedRoute
from cardsvc.applications import service as applications
from cardsvc.cards import service
from cardsvc.cards.models import Card
from cardsvc.cards.numbers import CARD_NO_PATTERN, check_card_no
from cardsvc.cards.schemas import (
    CancelBody,
    CardDetail,
    CardOut,
    CashPayoutBody,
    CashPayoutOut,
    PurseLockBody,
    PurseLockOut,
    TransitionOut,
)
from cardsvc.deps import HsmDep, SessionDep, SessionsDep, SettingsDep
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles

# The form /openapi.json states; check_card_no refuses another (422 ValidationFailed), and a
# wrong Luhn digit, which no pattern can state.
CardNoPath = Annotated[str, Path(json_schema_extra={"pattern": CARD_NO_PATTERN})]

router = APIRouter(prefix="/cards", tags=["cards"], route_class=GuardedRoute)

# Who may do what; the counter CLI (cardsvc/cards/cli.py) admits the same roles.
COUNTER_ROLES = (Role.counter_operator, Role.supervisor)
SUPERVISOR_ROLES = (Role.supervisor, Role.administrator)
READER_ROLES = (Role.counter_operator, Role.supervisor, Role.auditor, Role.finance)

Counter = Annotated[StaffPrincipal, Depends(require_roles(*COUNTER_ROLES))]
Supervisor = Annotated[StaffPrincipal, Depends(require_roles(*SUPERVISOR_ROLES))]
Reader = Annotated[StaffPrincipal, Depends(require_roles(*READER_ROLES))]


def card_out(card: Card) -> CardOut:
    return CardOut(
        id=card.id,
        card_no=card.card_no,
        asn=card.asn,
        resident_id=card.resident_id,
        card_type=card.card_type,
        concession_code=card.concession_code,
        status=card.status,
        chip_serial=card.chip_serial,
        key_version=card.key_version,
        issued_at=card.issued_at,
        expires_on=card.expires_on,
        replaced_by_id=card.replaced_by_id,
    )


@router.get(
    "/{card_no}",
    response_model=CardDetail,
    summary="A card and its balances (counter operator, supervisor, auditor, finance)",
)
async def get_card(card_no: CardNoPath, principal: Reader, session: SessionDep) -> CardDetail:
    card = await service.require_card(session, check_card_no(card_no), for_update=False)
    held = await service.balances(session, card)
    return CardDetail(
        **card_out(card).model_dump(),
        float_balance=held.float_balance,
        balance_to_load=held.to_load,
        cash_to_pay_out=held.cash_owed,
    )


@router.post(
    "/{card_no}/loss",
    response_model=TransitionOut,
    summary="Report loss: blacklisted at once (counter operator, supervisor)",
)
async def report_loss(
    card_no: CardNoPath, principal: Counter, session: SessionDep
) -> TransitionOut:
    card = await service.require_card(session, check_card_no(card_no))
    version = await service.report_loss(session, card, actor=principal.username)
    return TransitionOut(card=card_out(card), blacklist_version=version)


@router.post(
    "/{card_no}/recover",
    response_model=TransitionOut,
    summary="Lost card found: active again (counter operator, supervisor)",
)
async def recover(card_no: CardNoPath, principal: Counter, session: SessionDep) -> TransitionOut:
    card = await service.require_card(session, check_card_no(card_no))
    version = await service.recover(session, card, actor=principal.username)
    return TransitionOut(card=card_out(card), blacklist_version=version)


@router.post(
    "/{card_no}/freeze", response_model=TransitionOut, summary="Freeze (supervisor, administrator)"
)
async def freeze(card_no: CardNoPath, principal: Supervisor, session: SessionDep) -> TransitionOut:
    card = await service.require_card(session, check_card_no(card_no))
    version = await service.freeze(session, card, actor=principal.username)
    return TransitionOut(card=card_out(card), blacklist_version=version)


@router.post(
    "/{card_no}/unfreeze",
    response_model=TransitionOut,
    summary="Unfreeze (supervisor, administrator)",
)
async def unfreeze(
    card_no: CardNoPath, principal: Supervisor, session: SessionDep
) -> TransitionOut:
    card = await service.require_card(session, check_card_no(card_no))
    version = await service.unfreeze(session, card, actor=principal.username)
    return TransitionOut(card=card_out(card), blacklist_version=version)


@router.post(
    "/{card_no}/replace",
    response_model=TransitionOut,
    summary="Replace a lost card (counter operator, supervisor)",
)
async def replace(
    card_no: CardNoPath, principal: Counter, session: SessionDep, settings: SettingsDep
) -> TransitionOut:
    card = await service.require_card(session, check_card_no(card_no))
    application = await applications.replace_card(session, settings, card, actor=principal.username)
    return TransitionOut(card=card_out(card), replacement_application_id=application.id)


@router.post(
    "/{card_no}/cancel",
    response_model=TransitionOut,
    summary="Cancel; balance refunded after the waiting period (counter operator, supervisor)",
)
async def cancel(
    card_no: CardNoPath,
    body: CancelBody,
    principal: Counter,
    session: SessionDep,
    settings: SettingsDep,
) -> TransitionOut:
    card = await service.require_card(session, check_card_no(card_no))
    version = await service.cancel(
        session,
        settings,
        card,
        refund_to=body.refund_to,
        refund_ref=body.counter_code,
        actor=principal.username,
    )
    return TransitionOut(card=card_out(card), blacklist_version=version)


@router.post(
    "/{card_no}/cash-refund/payout",
    response_model=CashPayoutOut,
    summary="Pay a cancelled card's cash refund out of a counter's drawer (counter operator, supervisor)",
)
async def pay_out_cash_refund(
    card_no: CardNoPath,
    body: CashPayoutBody,
    principal: Counter,
    session: SessionDep,
    settings: SettingsDep,
) -> CashPayoutOut:
    """After the waiting period a cash refund is owed to the holder; this records that the counter
    handed it over (holder payable → the counter's cash). Asking again answers the same payout
    (``replayed``); 409 when the card has no cash refund, it is not due yet, it was paid at another
    counter, or the drawer holds less than the refund (it stays owed)."""
    card = await service.require_card(session, check_card_no(card_no))
    paid = await service.pay_out_cash_refund(
        session, settings, card, counter_code=body.counter_code, actor=principal.username
    )
    return CashPayoutOut(
        card_no=paid.card_no,
        amount=paid.amount,
        counter_code=paid.counter_code,
        paid_out_at=paid.paid_out_at,
        ledger_transaction_id=paid.ledger_transaction_id,
        replayed=paid.replayed,
    )


@router.post(
    "/{card_no}/expire", response_model=TransitionOut, summary="Expire (supervisor, administrator)"
)
async def expire(card_no: CardNoPath, principal: Supervisor, session: SessionDep) -> TransitionOut:
    card = await service.require_card(session, check_card_no(card_no))
    await service.expire(session, card, actor=principal.username)
    return TransitionOut(card=card_out(card))


@router.post(
    "/{card_no}/purse-lock",
    response_model=PurseLockOut,
    summary="APPLICATION BLOCK or UNBLOCK for the presented chip (counter operator, supervisor)",
)
async def purse_lock(
    card_no: CardNoPath,
    body: PurseLockBody,
    principal: Counter,
    session: SessionDep,
    sessions: SessionsDep,
    hsm: HsmDep,
) -> PurseLockOut:
    """The counter agent selects the purse and asks the card for a challenge; this answers the
    command with its MAC (docs/counter-agent.md §3). Block: a lost, frozen, cancelled, replaced or
    expired card; unblock: an active one. Audited as ``card.purse_block`` / ``card.purse_unblock``."""
    async with sessions() as read:
        card = await service.require_card(read, check_card_no(card_no), for_update=False)
    command = await service.purse_lock_command(
        hsm, card, action=body.action, chip_serial=body.chip_serial,
        challenge=bytes.fromhex(body.challenge),
    )  # fmt: skip
    await service.record_purse_lock(session, card, action=body.action, actor=principal.username)
    return PurseLockOut(card_no=card.card_no, action=body.action, command=command.hex().upper())
