"""Kiosk bill routes (docs/bills.md §5): signed terminal requests of a terminal of kind kiosk."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from cardsvc.api.limits import GuardedRoute
from cardsvc.api.openapi import errors
from cardsvc.bills import service as bills
from cardsvc.bills.endpoints import BillerClientDep, payment_out, presentment_out
from cardsvc.bills.schemas import PresentmentOut
from cardsvc.deps import HsmDep, SessionDep, SessionsDep, SettingsDep
from cardsvc.errors import Forbidden
from terminals.access import service as access
from terminals.access.auth import (
    AuthenticatedTerminal,
    VerifiedTerminal,
    signed_body,
    verified_body,
)
from terminals.bills import service
from terminals.bills.schemas import KioskPayment, KioskPaymentOut, KioskQuery, KioskStatusIn
from terminals.online.schemas import ResponseCode
from terminals.registry.models import TerminalKind

router = APIRouter(prefix="/kiosk/bills", tags=["bills"], route_class=GuardedRoute)


class NotAKiosk(Forbidden):
    """Only a terminal of kind kiosk asks for bills."""


@router.post("/query", response_model=PresentmentOut, summary="A kiosk asks what is due")
@errors(403, 404, 409, 429, 503)
async def query(
    body: Annotated[KioskQuery, signed_body(KioskQuery)],
    terminal: AuthenticatedTerminal,
    sessions: SessionsDep,
    session: SessionDep,
    client: BillerClientDep,
) -> PresentmentOut:
    """As the counter's query (docs/bills.md §4), for a signed-in terminal of kind kiosk (403
    `NotAKiosk` otherwise)."""
    if terminal.kind is not TerminalKind.kiosk:
        raise NotAKiosk("only a kiosk asks for bills")
    await session.commit()  # the sequence number is taken; nothing is held while the biller answers
    found = await bills.query_bill(sessions, client, body.biller, body.bill_key, body.period)
    return presentment_out(found)


@router.post(
    "/payments", response_model=KioskPaymentOut, summary="A kiosk pays a bill with card and PIN"
)
@errors(404, 409)
async def pay(
    signed: VerifiedTerminal,
    body: Annotated[KioskPayment, verified_body(KioskPayment)],
    session: SessionDep,
    sessions: SessionsDep,
    hsm: HsmDep,
    settings: SettingsDep,
) -> KioskPaymentOut:
    """Checks in order: a repeat of the terminal serial answers its payment (no PIN; other
    content is 409 `IdempotencyConflict`); the biller, presentment and amount as at a counter
    (404/409/422, docs/bills.md §5; nothing is taken); the PIN in the HSM; the sequence number; the terminal
    is a kiosk (58); the card (14, 41, 54, 62); the PIN's verdict (55, 75, 81); the money (51).
    A decline is HTTP 200 with its code. One payment per terminal serial: a repeat answers it."""
    first = await service.precheck(sessions, signed, body)
    if first is not None:
        await access.claim(session, signed)
        outcome = service.KioskOutcome(ResponseCode.approved, "accepted", first, replayed=True)
    else:
        outcome = await service.pay(sessions, session, signed, body, hsm=hsm, settings=settings)
    return KioskPaymentOut(
        terminal_serial=body.terminal_serial, response_code=outcome.code.value,
        approved=outcome.payment is not None, message=outcome.message,
        payment=None if outcome.payment is None
        else payment_out(outcome.payment, replayed=outcome.replayed),
    )  # fmt: skip


@router.post("/status", response_model=KioskPaymentOut, summary="A kiosk reads a payment's state")
@errors(403, 404)
async def status(
    body: Annotated[KioskStatusIn, signed_body(KioskStatusIn)],
    terminal: AuthenticatedTerminal,
    session: SessionDep,
) -> KioskPaymentOut:
    """A payment this kiosk made (404 `PaymentNotFound` for any other)."""
    payment = await bills.payment_by_serial(session, body.serial)
    if payment.terminal_no != terminal.terminal_no:
        raise bills.PaymentNotFound(f"no bill payment {body.serial}")
    return KioskPaymentOut(
        terminal_serial=int(payment.submit_key), response_code="00", approved=True,
        message=payment.status.visible, payment=payment_out(payment),
    )  # fmt: skip
