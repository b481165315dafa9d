"""Card rules: lookup, allocation, and the lifecycle of DESIGN §8.

``personalizing → active → lost → (active | replaced)``, ``active → frozen → active``,
``active → cancelled``, ``active → expired``. Every transition checks the current state and
refuses an impossible one with ``InvalidStateTransition`` (409). Loss, freeze and cancellation put
the card on the blacklist at once; the balance of a replaced or cancelled card moves only after
the waiting period (``settings.loss_waiting_period_days``), by ``cards.tasks.release_balances``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.audit import service as audit
from cardsvc.blacklist import service as blacklist
from cardsvc.cards import repository
from cardsvc.cards.models import (
    CONCESSION_CODES,
    BalanceRelease,
    Card,
    CardStatus,
    CardType,
    ReleaseKind,
    ReleaseStatus,
)
from cardsvc.cards.numbers import asn_of, make_card_no, mask_card_no
from cardsvc.clearing.service import clearing_date
from cardsvc.errors import Conflict, InvalidStateTransition, NotFound, ValidationFailed
from cardsvc.hsm import HsmClient
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.settings import Settings

# Statuses in which a resident still "holds" a card: a new application is refused.
HOLDING_STATUSES = (CardStatus.personalizing, CardStatus.active, CardStatus.lost, CardStatus.frozen)
REFUND_TARGETS = ("resident_account", "counter_cash")


async def find(session: AsyncSession, card_id: int, *, for_update: bool = False) -> Card | None:
    return await repository.get(session, card_id, for_update=for_update)


async def holding_cards(session: AsyncSession, resident_id: int) -> list[Card]:
    """The resident's cards that still count as held (a new card is refused while one is)."""
    return await repository.holding_cards(session, resident_id, HOLDING_STATUSES)


async def by_no(session: AsyncSession, card_no: str) -> Card | None:
    """The card with this number, or None (read, not locked)."""
    return await repository.by_no(session, card_no)


async def of_resident(session: AsyncSession, resident_id: int) -> list[Card]:
    """Every card the resident was ever issued, oldest first."""
    return await repository.of_resident(session, resident_id)


async def active_card(
    session: AsyncSession, resident_id: int, *, for_update: bool = False
) -> Card | None:
    """The resident's active card, row-locked for a lifecycle step when ``for_update``."""
    return await repository.active_of_resident(session, resident_id, for_update=for_update)


async def require_card(session: AsyncSession, card_no: str, *, for_update: bool = True) -> Card:
    """The card with this number, NotFound when none; row-locked for a lifecycle step unless the
    caller only reads it (``for_update=False``)."""
    card = await repository.by_no(session, card_no, for_update=for_update)
    if card is None:
        raise NotFound("no such card")
    return card


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def resolve_card_type(
    requested: CardType | None, birth: date, settings: Settings, today: date
) -> CardType:
    """Senior is decided by the birth date (age ≥ settings.senior_age, default 60); student and
    disabled are declared at the counter against documents the operator checks."""
    is_senior = age_on(birth, today) >= settings.senior_age
    if requested is None:
        return CardType.senior if is_senior else CardType.standard
    if requested is CardType.senior and not is_senior:
        raise ValidationFailed(
            f"a senior card needs the holder to be {settings.senior_age} or older"
        )
    return requested


@dataclass(frozen=True, slots=True)
class CardBalances:
    float_balance: int  # what the books say the chip holds (fen)
    to_load: int  # moved from the card it replaced, waiting to be loaded onto the chip (fen)
    cash_owed: int  # its cash refund, due and not yet paid out at a counter (fen)


async def balances(session: AsyncSession, card: Card) -> CardBalances:
    return CardBalances(
        await ledger.balance(session, AccountRef(AccountKind.card_float, card.card_no)),
        await ledger.balance(session, AccountRef(AccountKind.card_transfer, card.card_no)),
        await _cash_owed(session, card),
    )


def card_view(card: Card) -> dict[str, object]:
    """The audited shape of a card: no full card number (DESIGN §12)."""
    return {"card": mask_card_no(card.card_no), "status": card.status, "type": card.card_type}


async def allocate(
    session: AsyncSession, settings: Settings, *, resident_id: int, card_type: CardType, actor: str
) -> Card:
    """A new card record with the next number, waiting for personalization."""
    sequence = await repository.next_sequence(session, settings.city_code)
    card_no = make_card_no(settings.city_code, sequence)
    card = await repository.add(
        session,
        Card(
            card_no=card_no,
            asn=asn_of(card_no),
            resident_id=resident_id,
            card_type=card_type,
            concession_code=CONCESSION_CODES[card_type],
            status=CardStatus.personalizing,
            key_version=1,
        ),
    )
    await audit.record(
        session,
        actor=actor,
        action="card.allocate",
        entity="card",
        entity_id=str(card.id),
        after=card_view(card),
    )
    return card


def _check_from(card: Card, allowed: tuple[CardStatus, ...], action: str) -> None:
    if card.status not in allowed:
        raise InvalidStateTransition(
            f"cannot {action.split('.')[-1].replace('_', ' ')} a card that is {card.status.value} "
            f"(allowed from: {', '.join(s.value for s in allowed)})"
        )


async def _transition(
    session: AsyncSession,
    card: Card,
    allowed: tuple[CardStatus, ...],
    to: CardStatus,
    *,
    action: str,
    actor: str,
    **extra: object,
) -> None:
    _check_from(card, allowed, action)
    before = card_view(card)
    card.status = to
    card.status_changed_at = clock.now()
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action=action,
        entity="card",
        entity_id=str(card.id),
        before=before,
        after={**card_view(card), **extra},
    )


async def activate(session: AsyncSession, settings: Settings, card: Card, *, actor: str) -> Card:
    """Handover: the personalized card becomes the resident's active card."""
    if card.chip_serial is None:
        raise InvalidStateTransition("the card was never personalized")
    if await repository.holding_cards(session, card.resident_id, (CardStatus.active,)):
        raise Conflict("the resident already holds an active card")
    now = clock.now()
    card.issued_at = now
    card.expires_on = date(now.year + settings.card_validity_years, now.month, min(now.day, 28))
    await _transition(
        session,
        card,
        (CardStatus.personalizing,),
        CardStatus.active,
        action="card.activate",
        actor=actor,
    )
    return card


async def report_loss(session: AsyncSession, card: Card, *, actor: str) -> int:
    """Loss (挂失): blacklisted at once; returns the new blacklist version."""
    await _transition(
        session, card, (CardStatus.active,), CardStatus.lost, action="card.report_loss", actor=actor
    )
    return await blacklist.add(
        session, asn=card.asn, reason="lost", actor=actor, effective_at=card.status_changed_at
    )


async def recover(session: AsyncSession, card: Card, *, actor: str) -> int:
    """The lost card was found (解挂): active again and off the list."""
    _check_from(card, (CardStatus.lost,), "card.recover")  # the state first: an active card too
    if await repository.holding_cards(session, card.resident_id, (CardStatus.active,)):
        raise Conflict("the resident already holds another active card")
    await _transition(
        session, card, (CardStatus.lost,), CardStatus.active, action="card.recover", actor=actor
    )
    return await blacklist.remove(session, asn=card.asn, reason="recovered", actor=actor)


async def freeze(session: AsyncSession, card: Card, *, actor: str) -> int:
    await _transition(
        session, card, (CardStatus.active,), CardStatus.frozen, action="card.freeze", actor=actor
    )
    return await blacklist.add(session, asn=card.asn, reason="frozen", actor=actor)


async def unfreeze(session: AsyncSession, card: Card, *, actor: str) -> int:
    await _transition(
        session, card, (CardStatus.frozen,), CardStatus.active, action="card.unfreeze", actor=actor
    )
    return await blacklist.remove(session, asn=card.asn, reason="unfrozen", actor=actor)


async def mark_replaced(
    session: AsyncSession,
    settings: Settings,
    card: Card,
    *,
    replacement_application_id: int,
    actor: str,
) -> None:
    """The lost card becomes ``replaced``; its balance moves to the replacement card after the
    waiting period, counted from the loss (when the card went on the blacklist)."""
    lost_at = card.status_changed_at
    await _transition(
        session, card, (CardStatus.lost,), CardStatus.replaced, action="card.replace", actor=actor
    )
    await repository.add_release(
        session,
        BalanceRelease(
            card_id=card.id,
            kind=ReleaseKind.to_new_card,
            due_at=lost_at + timedelta(days=settings.loss_waiting_period_days),
            replacement_application_id=replacement_application_id,
            status=ReleaseStatus.pending,
            created_by=actor,
        ),
    )


async def cancel(
    session: AsyncSession,
    settings: Settings,
    card: Card,
    *,
    refund_to: str,
    refund_ref: str | None,
    actor: str,
) -> int:
    """Cancel (销户): blacklisted at once; the balance is refunded after the waiting period to the
    resident's online account or paid out in cash at a counter (``refund_ref`` = counter code)."""
    if refund_to not in REFUND_TARGETS:
        raise ValidationFailed(f"refund_to must be one of {', '.join(REFUND_TARGETS)}")
    if refund_to == "counter_cash" and not refund_ref:
        raise ValidationFailed("a cash refund names the counter")
    await _transition(
        session,
        card,
        (CardStatus.active,),
        CardStatus.cancelled,
        action="card.cancel",
        actor=actor,
        refund_to=refund_to,
    )
    await repository.add_release(
        session,
        BalanceRelease(
            card_id=card.id,
            kind=ReleaseKind.refund,
            due_at=card.status_changed_at + timedelta(days=settings.loss_waiting_period_days),
            refund_to=refund_to,
            refund_ref=refund_ref if refund_to == "counter_cash" else str(card.resident_id),
            status=ReleaseStatus.pending,
            created_by=actor,
        ),
    )
    return await blacklist.add(
        session, asn=card.asn, reason="cancelled", actor=actor, effective_at=card.status_changed_at
    )


async def expire(session: AsyncSession, card: Card, *, actor: str) -> None:
    """Past its expiry date the card stops; terminals refuse it by its own expiry date (0015)."""
    await _transition(
        session, card, (CardStatus.active,), CardStatus.expired, action="card.expire", actor=actor
    )


class WrongCard(Conflict):
    """The chip presented is not the one bound to the card named."""


# The purse may be blocked on a card that must not pay (lost and found, frozen, ended), and
# unblocked only on an active one (recovered, unfrozen).
PURSE_LOCK_FROM = {
    "block": (
        CardStatus.lost, CardStatus.frozen, CardStatus.cancelled, CardStatus.replaced,
        CardStatus.expired,
    ),
    "unblock": (CardStatus.active,),
}  # fmt: skip


async def purse_lock_command(
    hsm: HsmClient, card: Card, *, action: str, chip_serial: str, challenge: bytes
) -> bytes:
    """APPLICATION BLOCK or UNBLOCK for the chip of this card, MACed by the HSM under its DAMK
    over the card's own challenge (reference/pboc.md §6.5). Call it with no transaction open."""
    if card.chip_serial is None or card.chip_serial != chip_serial.upper():
        raise WrongCard(f"the card in the reader is not card {mask_card_no(card.card_no)}")
    if card.status not in PURSE_LOCK_FROM[action]:
        raise InvalidStateTransition(
            f"cannot {action} the purse of a card that is {card.status.value}"
        )
    return await hsm.purse_lock_command(
        bytes.fromhex(card.asn), card.key_version, action, challenge
    )


async def record_purse_lock(session: AsyncSession, card: Card, *, action: str, actor: str) -> None:
    await audit.record(
        session, actor=actor, action=f"card.purse_{action}", entity="card",
        entity_id=str(card.id), after={"status": card.status.value},
    )  # fmt: skip


async def require_chip_free(session: AsyncSession, chip_serial: str, card: Card) -> None:
    """A chip carries one live card: refuse a chip already bound to another live card."""
    other = await repository.live_card_with_chip(session, chip_serial)
    if other is not None and other.id != card.id:
        raise Conflict(
            f"chip {chip_serial} belongs to card {mask_card_no(other.card_no)} "
            f"({other.status.value}): personalize a blank card"
        )


@dataclass(frozen=True, slots=True)
class CashPayout:
    card_no: str
    amount: int
    counter_code: str
    paid_out_at: datetime
    ledger_transaction_id: int | None
    replayed: bool


async def pay_out_cash_refund(
    session: AsyncSession, settings: Settings, card: Card, *, counter_code: str, actor: str
) -> CashPayout:
    """Pay a cancelled card's cash refund out of a counter's drawer (DESIGN §8).

    After the waiting period the refund is owed to the holder (``holder_payable``); this hands it
    over: holder payable → the counter's cash, key ``card-cash-payout:<release id>``. The same
    payout again answers the first one; a drawer that holds less refuses (``InsufficientFunds``)
    and the refund stays owed.
    """
    release = await repository.release_for_card(session, card.id, for_update=True)
    if (
        release is None
        or release.kind is not ReleaseKind.refund
        or release.refund_to != "counter_cash"
    ):
        raise InvalidStateTransition("this card has no cash refund")
    if release.status is not ReleaseStatus.done:
        raise InvalidStateTransition(
            f"the cash refund is due after the waiting period, on {release.due_at.isoformat()}"
        )
    if release.paid_out_at is not None:
        if release.payout_counter != counter_code:
            raise InvalidStateTransition(
                f"the cash refund was paid out at counter {release.payout_counter}"
            )
        return CashPayout(card.card_no, release.amount or 0, counter_code, release.paid_out_at,
                          release.payout_transaction_id, replayed=True)  # fmt: skip
    amount = release.amount or 0
    tx_id: int | None = None
    if amount > 0:
        posted = await ledger.post(
            session,
            PostingRequest(
                idempotency_key=f"card-cash-payout:{release.id}",
                tx_type="payout",
                clearing_date=await clearing_date(session, settings),
                entries=[
                    Entry(
                        AccountRef(AccountKind.holder_payable, str(card.resident_id)),
                        Side.debit,
                        amount,
                    ),
                    Entry(AccountRef(AccountKind.counter_cash, counter_code), Side.credit, amount),
                ],
                record_ref=f"card_balance_release:{release.id}",
                description=f"cash refund of card {mask_card_no(card.card_no)}",
            ),
        )
        tx_id = posted.id
    release.paid_out_at, release.paid_out_by = clock.now(), actor
    release.payout_counter, release.payout_transaction_id = counter_code, tx_id
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action="card.cash_refund_paid",
        entity="card",
        entity_id=str(card.id),
        after={"card": mask_card_no(card.card_no), "amount": amount, "counter": counter_code},
    )
    return CashPayout(
        card.card_no, amount, counter_code, release.paid_out_at, tx_id, replayed=False
    )


async def _cash_owed(session: AsyncSession, card: Card) -> int:
    """Fen of the card's cash refund owed and not yet paid out at a counter (0 when none)."""
    release = await repository.release_for_card(session, card.id)
    if (
        release is None
        or release.refund_to != "counter_cash"
        or release.status is not ReleaseStatus.done
        or release.paid_out_at is not None
    ):
        return 0
    return release.amount or 0
