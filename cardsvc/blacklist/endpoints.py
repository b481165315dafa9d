"""Blacklist routes for staff (terminals get theirs from the terminal service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cardsvc.api.limits import GuardedRoute
from cardsvc.blacklist import service
from cardsvc.blacklist.schemas import BlacklistChangeOut, BlacklistOut
from cardsvc.deps import SessionDep
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles

router = APIRouter(prefix="/blacklist", tags=["blacklist"], route_class=GuardedRoute)

Reader = Annotated[
    StaffPrincipal,
    Depends(
        require_roles(Role.supervisor, Role.administrator, Role.auditor, Role.counter_operator)
    ),
]


@router.get(
    "",
    response_model=BlacklistOut,
    summary="Full list, or changes since a version (supervisor, administrator, auditor, counter operator)",
)
async def get_blacklist(
    principal: Reader, session: SessionDep, since: Annotated[int | None, Query(ge=0)] = None
) -> BlacklistOut:
    if since is None:
        version, entries = await service.full_list(session)
        full = True
    else:
        version, entries, full = (
            await service.current_version(session),
            await service.changes_since(session, since),
            False,
        )
    return BlacklistOut(
        version=version,
        full=full,
        changes=[
            BlacklistChangeOut(
                version=c.version,
                asn=c.asn,
                action=c.action,
                reason=c.reason,
                effective_at=c.effective_at,
            )
            for c in entries
        ],
    )
