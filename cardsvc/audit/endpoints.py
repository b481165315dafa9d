"""Audit routes (auditor, administrator)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cardsvc.api.limits import GuardedRoute
from cardsvc.audit import repository, service
from cardsvc.audit.schemas import AuditEntryOut, AuditVerifyOut
from cardsvc.deps import SessionDep
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles

router = APIRouter(prefix="/audit", tags=["audit"], route_class=GuardedRoute)

Auditor = Annotated[StaffPrincipal, Depends(require_roles(Role.auditor, Role.administrator))]


@router.get(
    "", response_model=list[AuditEntryOut], summary="Latest audit entries (auditor, administrator)"
)
async def list_entries(
    principal: Auditor,
    session: SessionDep,
    entity: Annotated[str | None, Query(max_length=32)] = None,
    entity_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntryOut]:
    rows = await repository.list_entries(session, entity=entity, entity_id=entity_id, limit=limit)
    return [
        AuditEntryOut(
            seq=r.seq,
            at=r.at,
            actor=r.actor,
            action=r.action,
            entity=r.entity,
            entity_id=r.entity_id,
            before=r.before,
            after=r.after,
            hash=r.hash,
        )
        for r in rows
    ]


@router.get(
    "/verify",
    response_model=AuditVerifyOut,
    summary="Recompute the hash chain (auditor, administrator)",
)
async def verify(principal: Auditor, session: SessionDep) -> AuditVerifyOut:
    r = await service.verify(session)
    return AuditVerifyOut(
        ok=r.ok,
        entries=r.entries,
        head_hash=r.head_hash,
        first_bad_seq=r.first_bad_seq,
        problem=r.problem,
    )
