"""Registry routes for administrators (require_roles(Role.administrator))."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from cardsvc.api.limits import GuardedRoute
from cardsvc.deps import SessionDep
from cardsvc.errors import NotFound
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles
from terminals.access import service as access
from terminals.registry import repository, service
from terminals.registry.schemas import (
    MerchantCreate,
    MerchantOut,
    TerminalCreate,
    TerminalKindChange,
    TerminalOut,
    TerminalStatusChange,
)

router = APIRouter(tags=["registry"], route_class=GuardedRoute)
Admin = Annotated[StaffPrincipal, Depends(require_roles(Role.administrator))]


@router.post("/merchants", response_model=MerchantOut, status_code=status.HTTP_201_CREATED)
async def create_merchant(body: MerchantCreate, admin: Admin, session: SessionDep) -> MerchantOut:
    merchant = await service.create_merchant(
        session,
        merchant_no=body.merchant_no,
        name=body.name,
        category=body.category,
        settlement_account=body.settlement_account,
        actor=admin.username,
    )
    return MerchantOut.model_validate(merchant)


@router.get("/merchants", response_model=list[MerchantOut])
async def list_merchants(_admin: Admin, session: SessionDep) -> list[MerchantOut]:
    return [MerchantOut.model_validate(m) for m in await repository.list_merchants(session)]


@router.get("/merchants/{merchant_no}", response_model=MerchantOut)
async def get_merchant(merchant_no: str, _admin: Admin, session: SessionDep) -> MerchantOut:
    return MerchantOut.model_validate(await service.require_merchant(session, merchant_no))


@router.post("/terminals", response_model=TerminalOut, status_code=status.HTTP_201_CREATED)
async def create_terminal(body: TerminalCreate, admin: Admin, session: SessionDep) -> TerminalOut:
    terminal = await service.create_terminal(
        session,
        terminal_no=body.terminal_no,
        psam_no=body.psam_no,
        merchant_no=body.merchant_no,
        kind=body.kind,
        description=body.description,
        actor=admin.username,
    )
    return await service.terminal_view(session, terminal)


@router.get("/terminals", response_model=list[TerminalOut])
async def list_terminals(
    _admin: Admin, session: SessionDep, merchant_no: str | None = None
) -> list[TerminalOut]:
    return await service.list_terminals(session, merchant_no)


@router.get("/terminals/{terminal_no}", response_model=TerminalOut)
async def get_terminal(terminal_no: str, _admin: Admin, session: SessionDep) -> TerminalOut:
    terminal = await repository.terminal_by_no(session, terminal_no)
    if terminal is None:
        raise NotFound(f"terminal {terminal_no} not found")
    return await service.terminal_view(session, terminal)


@router.post("/terminals/{terminal_no}/status", response_model=TerminalOut)
async def change_status(
    terminal_no: str, body: TerminalStatusChange, admin: Admin, session: SessionDep
) -> TerminalOut:
    terminal = await access.set_terminal_status(
        session, terminal_no, body.status, actor=admin.username
    )
    return await service.terminal_view(session, terminal)


@router.post("/terminals/{terminal_no}/kind", response_model=TerminalOut)
async def change_kind(
    terminal_no: str, body: TerminalKindChange, admin: Admin, session: SessionDep
) -> TerminalOut:
    terminal = await service.set_terminal_kind(
        session, terminal_no, body.kind, actor=admin.username
    )
    return await service.terminal_view(session, terminal)
