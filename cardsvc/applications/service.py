"""Application rules: an operator submits, a different supervisor decides (maker-checker),
production allocates the card number, personalization and handover finish it (DESIGN §8)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.applications import repository
from cardsvc.applications.models import Application, ApplicationKind, ApplicationStatus
from cardsvc.audit import service as audit
from cardsvc.cards import service as cards
from cardsvc.cards.models import Card, CardStatus, CardType
from cardsvc.cards.numbers import mask_card_no
from cardsvc.errors import Conflict, Forbidden, InvalidStateTransition, NotFound
from cardsvc.hsm import HsmClient
from cardsvc.residents import service as residents
from cardsvc.settings import Settings


async def find(session: AsyncSession, application_id: int) -> Application | None:
    return await repository.get(session, application_id)


async def get(
    session: AsyncSession, application_id: int, *, for_update: bool = False
) -> Application:
    application = await repository.get(session, application_id, for_update=for_update)
    if application is None:
        raise NotFound(f"no application {application_id}")
    return application


async def newest(
    session: AsyncSession, status: ApplicationStatus | None = None, limit: int = 100
) -> list[Application]:
    """Applications newest first, optionally in one status (the counter's work list)."""
    return await repository.list_by_status(session, status, limit)


def _view(application: Application) -> dict[str, object]:
    return {
        "status": application.status,
        "kind": application.kind,
        "card_type": application.card_type,
    }


async def _move(
    session: AsyncSession,
    application: Application,
    allowed: tuple[ApplicationStatus, ...],
    to: ApplicationStatus,
    *,
    action: str,
    actor: str,
) -> None:
    if application.status not in allowed:
        raise InvalidStateTransition(
            f"cannot {action.split('.')[-1].replace('_', ' ')} an application that is {application.status.value}"
        )
    before = _view(application)
    application.status = to
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action=action,
        entity="application",
        entity_id=str(application.id),
        before=before,
        after=_view(application),
    )


async def submit(
    reads: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    hsm: HsmClient,
    settings: Settings,
    *,
    resident_id: int,
    card_type: CardType | None,
    actor: str,
) -> Application:
    """The card type follows the holder's age, whose birth date is only in the encrypted ID: it is
    read in a short session and decrypted by the HSM before the write transaction opens."""
    async with reads() as reading:
        resident = await residents.get(reading, resident_id)
    birth_date = (await residents.reveal(hsm, resident)).birth_date
    if await repository.open_for_resident(session, resident_id) is not None:
        raise Conflict("the resident already has an open application")
    held = await cards.holding_cards(session, resident_id)
    if held:
        raise Conflict(
            f"the resident already holds a card ({held[0].status.value}); report loss and replace it instead"
        )
    resolved = cards.resolve_card_type(
        card_type, birth_date, settings, settings.local_date(clock.now())
    )
    application = await repository.add(
        session,
        Application(
            resident_id=resident_id,
            kind=ApplicationKind.new,
            card_type=resolved.value,
            status=ApplicationStatus.submitted,
            submitted_by=actor,
        ),
    )
    await audit.record(
        session,
        actor=actor,
        action="application.submit",
        entity="application",
        entity_id=str(application.id),
        after=_view(application),
    )
    return application


async def approve(session: AsyncSession, application_id: int, *, actor: str) -> Application:
    application = await get(session, application_id, for_update=True)
    if application.submitted_by == actor:
        raise Forbidden(
            "an application is approved by a supervisor other than the one who submitted it"
        )
    await _move(
        session,
        application,
        (ApplicationStatus.submitted,),
        ApplicationStatus.approved,
        action="application.approve",
        actor=actor,
    )
    application.decided_by, application.decided_at = actor, clock.now()
    await session.flush()
    return application


async def reject(
    session: AsyncSession, application_id: int, *, reason: str, actor: str
) -> Application:
    application = await get(session, application_id, for_update=True)
    if application.submitted_by == actor:
        raise Forbidden(
            "an application is decided by a supervisor other than the one who submitted it"
        )
    await _move(
        session,
        application,
        (ApplicationStatus.submitted,),
        ApplicationStatus.rejected,
        action="application.reject",
        actor=actor,
    )
    application.decided_by, application.decided_at, application.reject_reason = (
        actor,
        clock.now(),
        reason,
    )
    await session.flush()
    return application


async def start_production(
    session: AsyncSession, settings: Settings, application_id: int, *, actor: str
) -> Card:
    """Allocate the card number and the card record (status ``personalizing``)."""
    application = await get(session, application_id, for_update=True)
    await _move(
        session,
        application,
        (ApplicationStatus.approved,),
        ApplicationStatus.in_production,
        action="application.start_production",
        actor=actor,
    )
    card = await cards.allocate(
        session,
        settings,
        resident_id=application.resident_id,
        card_type=CardType(application.card_type),
        actor=actor,
    )
    application.card_id = card.id
    await session.flush()
    return card


async def replace_card(
    session: AsyncSession, settings: Settings, card: Card, *, actor: str
) -> Application:
    """Replace a lost card (补卡): a replacement application is submitted for approval and the
    old card becomes ``replaced`` (``cards.service.mark_replaced``)."""
    if await repository.open_for_resident(session, card.resident_id) is not None:
        raise Conflict("the resident already has an open application")
    application = await repository.add(
        session,
        Application(
            resident_id=card.resident_id,
            kind=ApplicationKind.replacement,
            card_type=card.card_type.value,
            status=ApplicationStatus.submitted,
            submitted_by=actor,
            replaces_card_id=card.id,
        ),
    )
    await cards.mark_replaced(
        session, settings, card, replacement_application_id=application.id, actor=actor
    )
    await audit.record(
        session,
        actor=actor,
        action="application.submit",
        entity="application",
        entity_id=str(application.id),
        after={
            "kind": application.kind,
            "card_type": application.card_type,
            "replaces": mask_card_no(card.card_no),
        },
    )
    return application


async def card_of(
    session: AsyncSession, application: Application, *, for_update: bool = True
) -> Card:
    if application.card_id is None:
        raise InvalidStateTransition("the application has no card yet; start production first")
    card = await cards.find(session, application.card_id, for_update=for_update)
    if card is None:
        raise NotFound("the application's card is missing")
    return card


async def mark_personalized(
    session: AsyncSession, application: Application, card: Card, *, chip_serial: str, actor: str
) -> None:
    """Called by personalization only after every step and the key proof succeeded."""
    if card.status is not CardStatus.personalizing:
        raise InvalidStateTransition(f"card is {card.status.value}, not personalizing")
    await cards.require_chip_free(session, chip_serial, card)
    card.chip_serial = chip_serial
    await _move(
        session,
        application,
        (ApplicationStatus.in_production,),
        ApplicationStatus.personalized,
        action="application.personalized",
        actor=actor,
    )
    await audit.record(
        session,
        actor=actor,
        action="card.personalized",
        entity="card",
        entity_id=str(card.id),
        after={**cards.card_view(card), "chip_serial": chip_serial},
    )


async def handover(
    session: AsyncSession, settings: Settings, application_id: int, *, actor: str
) -> Card:
    """The resident receives the card: application issued, card active; a replacement links the
    old card to the new one."""
    application = await get(session, application_id, for_update=True)
    if application.status is not ApplicationStatus.personalized:
        raise InvalidStateTransition(
            f"cannot hand over an application that is {application.status.value}"
        )
    card = await card_of(session, application)
    await cards.activate(session, settings, card, actor=actor)
    await _move(
        session,
        application,
        (ApplicationStatus.personalized,),
        ApplicationStatus.issued,
        action="application.handover",
        actor=actor,
    )
    application.issued_by, application.issued_at = actor, clock.now()
    if application.replaces_card_id is not None:
        old = await cards.find(session, application.replaces_card_id, for_update=True)
        if old is not None:
            old.replaced_by_id = card.id
            await audit.record(
                session, actor=actor, action="card.link_replacement", entity="card", entity_id=str(old.id),
                after={"replaced_by": mask_card_no(card.card_no)},
            )  # fmt: skip
    await session.flush()
    return card
