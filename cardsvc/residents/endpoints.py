"""Resident routes (counter work)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cardsvc import clock
from cardsvc.api.limits import GuardedRoute
from cardsvc.audit import service as audit
from cardsvc.deps import HsmDep, SessionDep, SettingsDep
from cardsvc.hsm import HsmClient
from cardsvc.residents import service
from cardsvc.residents.models import Resident
from cardsvc.residents.schemas import (
    ResidentContactUpdate,
    ResidentCreate,
    ResidentLookup,
    ResidentOut,
)
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles

router = APIRouter(prefix="/residents", tags=["residents"], route_class=GuardedRoute)

# Who may do what; the counter CLI (cardsvc/residents/cli.py) admits the same roles.
COUNTER_ROLES = (Role.counter_operator, Role.supervisor)
READER_ROLES = (Role.counter_operator, Role.supervisor, Role.auditor)

Counter = Annotated[StaffPrincipal, Depends(require_roles(*COUNTER_ROLES))]
Reader = Annotated[StaffPrincipal, Depends(require_roles(*READER_ROLES))]


async def resident_out(hsm: HsmClient, resident: Resident, *, reveal: bool) -> ResidentOut:
    resident_id, name, birth_date = resident.id_masked, resident.name_masked, None
    if reveal:
        pii = await service.reveal(hsm, resident)
        resident_id, name, birth_date = pii.resident_id, pii.name, pii.birth_date
    return ResidentOut(
        id=resident.id,
        resident_id=resident_id,
        name=name,
        sex=resident.sex,
        birth_date=birth_date,
        phone=resident.phone,
        address=resident.address,
    )


@router.post(
    "",
    response_model=ResidentOut,
    status_code=201,
    summary="Register a resident (counter operator, supervisor)",
)
async def register(
    body: ResidentCreate,
    principal: Counter,
    session: SessionDep,
    hsm: HsmDep,
    settings: SettingsDep,
) -> ResidentOut:
    resident = await service.register(
        session,
        hsm,
        service.ResidentIn(
            body.resident_id, body.name, body.phone, body.address, body.sex, body.birth_date
        ),
        actor=principal.username,
        today=settings.local_date(clock.now()),
    )
    return await resident_out(hsm, resident, reveal=False)


@router.post(
    "/lookup",
    response_model=ResidentOut,
    summary="Find a resident by ID number (counter operator, supervisor)",
)
async def lookup(
    body: ResidentLookup, principal: Counter, session: SessionDep, hsm: HsmDep
) -> ResidentOut:
    # POST, not GET: the ID number must not appear in URLs (access logs, proxies).
    resident = await service.lookup(session, hsm, body.resident_id)
    return await resident_out(hsm, resident, reveal=False)


@router.get(
    "/{resident_id}",
    response_model=ResidentOut,
    summary="A resident (counter operator, supervisor, auditor)",
)
async def get_resident(
    resident_id: int,
    principal: Reader,
    session: SessionDep,
    hsm: HsmDep,
    reveal: Annotated[
        bool, Query(description="clear ID and name; counter operator and supervisor only")
    ] = False,
) -> ResidentOut:
    resident = await service.get(session, resident_id)
    if reveal:
        # The counter needs the clear values to check documents; an auditor does not.
        if not principal.roles & {Role.counter_operator, Role.supervisor}:
            from cardsvc.errors import Forbidden

            raise Forbidden("revealing personal data needs the counter operator or supervisor role")
        await audit.record(
            session,
            actor=principal.username,
            action="resident.reveal",
            entity="resident",
            entity_id=str(resident.id),
        )
    return await resident_out(hsm, resident, reveal=reveal)


@router.patch(
    "/{resident_id}",
    response_model=ResidentOut,
    summary="Update contact details (counter operator, supervisor)",
)
async def update(
    resident_id: int,
    body: ResidentContactUpdate,
    principal: Counter,
    session: SessionDep,
    hsm: HsmDep,
) -> ResidentOut:
    resident = await service.get(session, resident_id)
    resident = await service.update_contact(
        session, resident, phone=body.phone, address=body.address, actor=principal.username
    )
    return await resident_out(hsm, resident, reveal=False)
