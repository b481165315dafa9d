"""Application routes: submit (operator), approve/reject (supervisor), production, handover."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cardsvc.api.limits import GuardedRoute
from cardsvc.applications import service
from cardsvc.applications.models import Application, ApplicationStatus
from cardsvc.applications.schemas import ApplicationCreate, ApplicationOut, RejectBody
from cardsvc.cards import service as cards
from cardsvc.cards.endpoints import card_out
from cardsvc.cards.models import CardType
from cardsvc.cards.schemas import CardOut
from cardsvc.deps import HsmDep, SessionDep, SessionsDep, SettingsDep
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles

router = APIRouter(prefix="/applications", tags=["applications"], route_class=GuardedRoute)

# Who may do what; the counter CLI (cardsvc/applications/cli.py) admits the same roles.
OPERATOR_ROLES = (Role.counter_operator,)
SUPERVISOR_ROLES = (Role.supervisor,)
COUNTER_ROLES = (Role.counter_operator, Role.supervisor)
READER_ROLES = (Role.counter_operator, Role.supervisor, Role.auditor)

Operator = Annotated[StaffPrincipal, Depends(require_roles(*OPERATOR_ROLES))]
Supervisor = Annotated[StaffPrincipal, Depends(require_roles(*SUPERVISOR_ROLES))]
Counter = Annotated[StaffPrincipal, Depends(require_roles(*COUNTER_ROLES))]
Reader = Annotated[StaffPrincipal, Depends(require_roles(*READER_ROLES))]


async def application_out(session: SessionDep, application: Application) -> ApplicationOut:
    card_no = None
    if application.card_id is not None:
        card = await cards.find(session, application.card_id)
        card_no = card.card_no if card else None
    return ApplicationOut(
        id=application.id,
        resident_id=application.resident_id,
        kind=application.kind,
        card_type=CardType(application.card_type),
        status=application.status,
        submitted_by=application.submitted_by,
        submitted_at=application.submitted_at,
        decided_by=application.decided_by,
        reject_reason=application.reject_reason,
        card_id=application.card_id,
        card_no=card_no,
        replaces_card_id=application.replaces_card_id,
    )


@router.post(
    "",
    response_model=ApplicationOut,
    status_code=201,
    summary="Submit an application (counter operator)",
)
async def submit(
    body: ApplicationCreate,
    principal: Operator,
    session: SessionDep,
    sessions: SessionsDep,
    hsm: HsmDep,
    settings: SettingsDep,
) -> ApplicationOut:
    application = await service.submit(
        sessions,
        session,
        hsm,
        settings,
        resident_id=body.resident_id,
        card_type=body.card_type,
        actor=principal.username,
    )
    return await application_out(session, application)


@router.get(
    "",
    response_model=list[ApplicationOut],
    summary="Applications, newest first (counter operator, supervisor, auditor)",
)
async def list_applications(
    principal: Reader,
    session: SessionDep,
    status: Annotated[ApplicationStatus | None, Query()] = None,
) -> list[ApplicationOut]:
    return [await application_out(session, a) for a in await service.newest(session, status)]


@router.get(
    "/{application_id}",
    response_model=ApplicationOut,
    summary="An application (counter operator, supervisor, auditor)",
)
async def get_application(
    application_id: int, principal: Reader, session: SessionDep
) -> ApplicationOut:
    return await application_out(session, await service.get(session, application_id))


@router.post(
    "/{application_id}/approve",
    response_model=ApplicationOut,
    summary="Approve (supervisor, not the submitter)",
)
async def approve(
    application_id: int, principal: Supervisor, session: SessionDep
) -> ApplicationOut:
    return await application_out(
        session, await service.approve(session, application_id, actor=principal.username)
    )


@router.post(
    "/{application_id}/reject",
    response_model=ApplicationOut,
    summary="Reject (supervisor, not the submitter)",
)
async def reject(
    application_id: int, body: RejectBody, principal: Supervisor, session: SessionDep
) -> ApplicationOut:
    return await application_out(
        session,
        await service.reject(session, application_id, reason=body.reason, actor=principal.username),
    )


@router.post(
    "/{application_id}/production",
    response_model=CardOut,
    summary="Start production: allocate the card number (counter operator, supervisor)",
)
async def start_production(
    application_id: int, principal: Counter, session: SessionDep, settings: SettingsDep
) -> CardOut:
    return card_out(
        await service.start_production(session, settings, application_id, actor=principal.username)
    )


@router.post(
    "/{application_id}/handover",
    response_model=CardOut,
    summary="Hand the personalized card over; it becomes active (counter operator)",
)
async def handover(
    application_id: int, principal: Operator, session: SessionDep, settings: SettingsDep
) -> CardOut:
    return card_out(
        await service.handover(session, settings, application_id, actor=principal.username)
    )
