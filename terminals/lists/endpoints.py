"""List routes: signed terminal downloads and the administrators' parameter tables."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from cardsvc.api.limits import GuardedRoute
from cardsvc.deps import SessionDep
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles
from terminals.access.auth import AuthenticatedTerminal, signed_body
from terminals.access.schemas import BIGINT_MAX
from terminals.lists import repository, service
from terminals.lists.models import ParameterTable
from terminals.lists.schemas import (
    BlacklistResponse,
    ParameterItem,
    ParameterSet,
    ParametersResponse,
    VersionsReport,
)

terminal_router = APIRouter(
    prefix="/terminal/lists", tags=["terminal lists"], route_class=GuardedRoute
)
admin_router = APIRouter(
    prefix="/parameters", tags=["terminal parameters"], route_class=GuardedRoute
)
Admin = Annotated[StaffPrincipal, Depends(require_roles(Role.administrator))]

# The forms /openapi.json states; the service refuses another table or key (422
# ValidationFailed) before it writes anything.
TablePath = Annotated[str, Path(json_schema_extra={"enum": [t.value for t in ParameterTable]})]
KeyPath = Annotated[str, Path(json_schema_extra={"pattern": service.KEY_PATTERN})]


@terminal_router.get("/blacklist", response_model=BlacklistResponse)
async def blacklist(
    terminal: AuthenticatedTerminal, session: SessionDep, since: int = Query(0, ge=0, le=BIGINT_MAX)
) -> BlacklistResponse:
    """The blacklist in full (since=0) or as the changes after the terminal's version."""
    del terminal
    return await service.blacklist_for(session, since)


@terminal_router.get("/parameters", response_model=ParametersResponse)
async def parameters(
    terminal: AuthenticatedTerminal, session: SessionDep, since: int = Query(0, ge=0, le=BIGINT_MAX)
) -> ParametersResponse:
    """Fares, concessions, transfer window and parking tariffs, in full or as changes."""
    del terminal
    return await service.parameters_for(session, since)


@terminal_router.post("/versions")
async def report_versions(
    terminal: AuthenticatedTerminal,
    session: SessionDep,
    body: Annotated[VersionsReport, signed_body(VersionsReport)],
) -> dict[str, int]:
    """The terminal reports the list versions it now holds (stored for CRF9-style checks)."""
    await service.report_versions(
        session, terminal.terminal_id, body.blacklist_version, body.params_version
    )
    return {"blacklist_version": body.blacklist_version, "params_version": body.params_version}


@admin_router.get("", response_model=ParametersResponse)
async def list_parameters(_admin: Admin, session: SessionDep) -> ParametersResponse:
    return await service.parameters_for(session, 0)


@admin_router.put("/{table}/{key}", response_model=ParameterItem)
async def set_parameter(
    table: TablePath, key: KeyPath, body: ParameterSet, admin: Admin, session: SessionDep
) -> ParameterItem:
    version = await service.set_parameter(session, table, key, body.value, actor=admin.username)
    return ParameterItem(version=version, table=table, key=key, action="set", value=body.value)


@admin_router.delete("/{table}/{key}", response_model=ParameterItem)
async def delete_parameter(
    table: TablePath, key: KeyPath, admin: Admin, session: SessionDep
) -> ParameterItem:
    version = await service.delete_parameter(session, table, key, actor=admin.username)
    return ParameterItem(version=version, table=table, key=key, action="delete", value=None)


__all__ = ["admin_router", "repository", "terminal_router"]
