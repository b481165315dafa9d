"""The cardholder's PIN of a terminal message that debits the online account (a purchase, a
pre-authorization, a load from the account; docs/terminal-protocol.md §10, §10.1).

The PIN is checked before the request's sequence number is taken, so that nothing is held while
the HSM works (docs/architecture.md §11): a short transaction of its own reads the card and
whether the serial already holds a message (one statement), marks the sequence number as having
had its PIN checked (a copy of the request checks none) and, in the same statement, takes a try
on the account's PIN (the count goes up first: concurrent guesses never take more tries than are
left); then one ``PIN_VERIFY`` in the HSM. The try is settled in the request's own transaction, after the number
is taken, and the verdict counts at its step of the order of checks (:func:`refusal`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import pgdirect
from cardsvc.accounts import service as accounts
from cardsvc.accounts.service import PinCheck, PinEntry, PinOutcome, PinTry
from cardsvc.db import unit_of_work
from cardsvc.errors import Conflict, DependencyUnavailable
from cardsvc.hsm import HsmClient, HsmError, HsmUnavailable, PinKeyRef
from cardsvc.logging import get_logger
from cardsvc.settings import Settings
from terminals.access import service as access
from terminals.access.context import TerminalContext
from terminals.access.service import SignedRequest
from terminals.online import messages
from terminals.online.messages import Declined, card_refusal, local_now
from terminals.online.repository import CardStanding
from terminals.online.schemas import ResponseCode

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PinStep:
    """What a message read and had the HSM check before its sequence number was taken."""

    read: bool = False  # the card was read (False: not needed, or the serial held a message)
    standing: CardStanding | None = None
    taken: PinTry | None = None  # the try taken for the PIN block, settled after the number
    valid: bool | None = None  # the HSM's verdict on it; None: the block could not be read
    early: PinCheck | None = None  # no try could be taken: the account has no PIN, or is locked


async def check_before_number(
    sessions: async_sessionmaker[AsyncSession],
    hsm: HsmClient,
    signed: SignedRequest,
    settings: Settings,
    *,
    asn: str,
    serial: int,
    pin_block: str | None,
    needed: bool = True,
) -> PinStep:
    """Read the serial and the card, and check the PIN block in the HSM, only when the message
    will reach its PIN step: a block was sent (``needed``: the terminal may ask for the
    message at all), the serial holds no message yet, and the card is not refused."""
    if not needed or pin_block is None or signed.pin_key_blob is None:
        return PinStep()  # no PIN to check: the request's transaction reads what it needs
    async with unit_of_work(sessions) as reading:
        # Each statement commits alone, in this order: the read, then the mark with the try (one
        # statement: the try is taken only if the mark was made). A crash after the read leaves
        # nothing; one after the mark and the try leaves a try taken, as a crash before settling
        # does; a mark with no try left leaves the number marked, as an HSM that does not answer.
        pgdirect.statements_on_their_own(reading)
        standing, answered = await messages.card_standing_at_serial(
            reading, asn, signed.terminal_no, serial
        )
        if answered:
            return PinStep()
        if standing is None or card_refusal(standing, local_now(settings).date()) is not None:
            return PinStep(read=True, standing=standing)
        taken = await accounts.take_pin_try_after(
            reading, settings, standing.resident_id, access.pin_seq_mark(signed)
        )
        if taken is None:  # the number is taken already, or a PIN was checked for it
            return PinStep(read=True, standing=standing)
    if isinstance(taken, PinCheck):
        if taken.outcome is PinOutcome.busy:
            raise Conflict("other PIN checks of this account are running; send again")
        return PinStep(read=True, standing=standing, early=taken)
    entry = PinEntry(PinKeyRef(signed.pin_key_blob), bytes.fromhex(pin_block), standing.card_no)
    try:
        valid = await accounts.verify_pin_try(hsm, taken, entry)
    except HsmUnavailable:
        async with unit_of_work(sessions) as settling:
            await accounts.settle_pin_try(settling, settings, taken, None)
        raise DependencyUnavailable("HSM unavailable") from None
    except HsmError as exc:
        # The HSM refused the request itself (not a verdict on the PIN): no try, answered as a
        # block that cannot be checked.
        log.warning("pin.hsm_error", code=exc.code)
        valid = None
    return PinStep(read=True, standing=standing, taken=taken, valid=valid)


async def settle(session: AsyncSession, settings: Settings, step: PinStep) -> PinCheck | None:
    """Settle the step's try in the request's transaction (after its number was taken): the
    PIN's verdict; None when no PIN was checked."""
    if step.taken is None:
        return step.early
    return await accounts.settle_pin_try(session, settings, step.taken, step.valid)


def refusal(
    pin_block: str | None,
    amount: int,
    check: PinCheck | None,
    terminal: TerminalContext,
    settings: Settings,
) -> Declined | None:
    """Why the cardholder's PIN does not allow this debit, as a decline; None when it does."""
    if pin_block is None:
        limit = settings.online_no_pin_limits.get(terminal.merchant_category, 0)
        return None if amount <= limit else Declined(ResponseCode.incorrect_pin, "pin_missing")
    if check is None:  # the session has no PIN key (or a copy of the request checked none)
        return Declined(ResponseCode.pin_unreadable, "pin_not_checked")
    if check.outcome is PinOutcome.verified:
        return None
    if check.outcome is PinOutcome.wrong:
        return Declined(ResponseCode.incorrect_pin, "pin_wrong")
    if check.outcome is PinOutcome.not_set:
        return Declined(ResponseCode.incorrect_pin, "pin_not_set")
    if check.outcome is PinOutcome.locked:
        return Declined(ResponseCode.pin_tries_exceeded, "pin_locked")
    return Declined(ResponseCode.pin_unreadable, "pin_unreadable")
