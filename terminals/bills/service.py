"""A kiosk pays a bill from the card holder's online account with the card and its PIN.

The order is the online purchase's (docs/architecture.md §8, §11): what can be refused without
the card (the biller, the presentment, the amount) is checked in a short read first; then the
PIN is checked in the HSM with nothing held (``terminals.online.pins``), the sequence number is
taken, the PIN's try settled, and the payment accepted in the request's transaction. A decline
is an answer (HTTP 200 with its response code) and commits the PIN count.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc.bills import service as bills
from cardsvc.bills.models import BillPayment, SubChannel
from cardsvc.errors import IdempotencyConflict
from cardsvc.hsm import HsmClient
from cardsvc.ledger.errors import InsufficientFunds
from cardsvc.settings import Settings
from terminals.access import service as access
from terminals.access.service import SignedRequest
from terminals.bills.schemas import KioskPayment
from terminals.online import messages, pins
from terminals.online.messages import Declined, card_refusal, local_now
from terminals.online.schemas import ResponseCode
from terminals.registry.models import TerminalKind


@dataclass(frozen=True, slots=True)
class KioskOutcome:
    code: ResponseCode
    message: str
    payment: BillPayment | None = None
    replayed: bool = False


async def precheck(
    sessions: async_sessionmaker[AsyncSession], signed: SignedRequest, body: KioskPayment
) -> BillPayment | None:
    """A repeat of the terminal serial (its payment, answered without a PIN), or None after the
    refusals that need neither the card nor the PIN (raised as the counter's are)."""
    async with sessions() as read:
        first = await bills.kiosk_payment(read, signed.terminal_no, body.terminal_serial)
        if first is not None:
            if (first.biller_code, first.reference) != (body.biller, body.reference) or (
                body.amount is not None and body.amount != first.amount
            ):
                raise IdempotencyConflict(
                    f"terminal serial {body.terminal_serial} was used for another payment"
                )
            return first
        await bills.check_payable(read, body.biller, body.reference, body.amount)
    return None


async def pay(
    sessions: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    signed: SignedRequest,
    body: KioskPayment,
    *,
    hsm: HsmClient,
    settings: Settings,
) -> KioskOutcome:
    is_kiosk = signed.kind is TerminalKind.kiosk
    step = await pins.check_before_number(
        sessions, hsm, signed, settings, asn=body.asn, serial=body.terminal_serial,
        pin_block=body.pin_block, needed=is_kiosk,
    )  # fmt: skip
    terminal = await access.claim(session, signed)
    check = await pins.settle(session, settings, step)
    try:
        if not is_kiosk:
            raise Declined(ResponseCode.not_permitted_to_terminal, "not_a_kiosk")
        standing = step.standing if step.read else await messages.card_standing(session, body.asn)
        refusal = card_refusal(standing, local_now(settings).date())
        if refusal is not None or standing is None:
            raise refusal or Declined(ResponseCode.unknown_card, "unknown_card")
        declined = pins.refusal(body.pin_block, 0, check, terminal, settings)
        if declined is not None:
            raise declined
        payer = bills.Payer(
            SubChannel.kiosk, resident_id=standing.resident_id, card_no=standing.card_no,
            terminal_no=terminal.terminal_no,
        )  # fmt: skip
        try:
            async with session.begin_nested():
                made = await bills.submit_payment(
                    session, settings, payer, biller_code=body.biller,
                    reference=body.reference, amount=body.amount, key=str(body.terminal_serial),
                )  # fmt: skip
        except InsufficientFunds:
            raise Declined(ResponseCode.insufficient_funds, "insufficient_funds") from None
    except Declined as declined_:
        return KioskOutcome(declined_.code, declined_.reason)
    return KioskOutcome(ResponseCode.approved, "accepted", made.payment, made.replayed)
