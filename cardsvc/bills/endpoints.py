"""Bills routes (docs/bills.md): the billers registry (administrator)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from cardsvc.api.limits import GuardedRoute
from cardsvc.api.openapi import errors
from cardsvc.bills import service
from cardsvc.bills.models import Biller, BillerStatus
from cardsvc.bills.schemas import (
    BankDetails,
    BillerChange,
    BillerIn,
    BillerOut,
    BillerStatusChange,
    FeeRule,
)
from cardsvc.deps import HsmDep, SessionDep
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles

router = APIRouter(prefix="/bills", tags=["bills"], route_class=GuardedRoute)

Admin = Annotated[StaffPrincipal, Depends(require_roles(Role.administrator))]
Reader = Annotated[
    StaffPrincipal, Depends(require_roles(Role.administrator, Role.finance, Role.auditor))
]
Code = Annotated[str, Path(pattern=r"^[A-Z0-9_]{2,16}$")]


def biller_out(biller: Biller) -> BillerOut:
    return BillerOut(
        code=biller.code,
        name=biller.name,
        category=biller.category,
        endpoint=biller.endpoint,
        key_label=biller.key_label,
        bill_key_pattern=biller.bill_key_pattern,
        bank=BankDetails(
            bank_name=biller.bank_name,
            account_no=biller.bank_account_no,
            account_name=biller.bank_account_name,
        ),
        fee=FeeRule(fixed=biller.fee_fixed, bps=biller.fee_bps, max=biller.fee_max),
        settlement_cycle=biller.settlement_cycle,
        status=biller.status,
        created_at=biller.created_at,
        updated_at=biller.updated_at,
    )


@router.post(
    "/billers",
    response_model=BillerOut,
    status_code=201,
    summary="Register a biller (administrator)",
)
async def create_biller(
    body: BillerIn, principal: Admin, session: SessionDep, hsm: HsmDep
) -> BillerOut:
    """The key label must name an active ``biller-mac`` key in the HSM (422 otherwise); a code
    that exists is 409."""
    await service.check_key(hsm, body.key_label)
    biller = await service.create_biller(session, body, actor=principal.username)
    return biller_out(biller)


@router.get(
    "/billers",
    response_model=list[BillerOut],
    summary="The billers, by code (administrator, finance, auditor)",
)
async def list_billers(
    principal: Reader, session: SessionDep, status: BillerStatus | None = None
) -> list[BillerOut]:
    return [biller_out(b) for b in await service.list_billers(session, status=status)]


@router.get(
    "/billers/{code}",
    response_model=BillerOut,
    summary="A biller (administrator, finance, auditor)",
)
@errors(404)
async def get_biller(code: Code, principal: Reader, session: SessionDep) -> BillerOut:
    return biller_out(await service.get_biller(session, code))


@router.patch(
    "/billers/{code}", response_model=BillerOut, summary="Change a biller (administrator)"
)
@errors(404)
async def change_biller(
    code: Code, body: BillerChange, principal: Admin, session: SessionDep, hsm: HsmDep
) -> BillerOut:
    """Only the fields given change; a new key label is checked with the HSM as at
    registration."""
    if body.key_label is not None:
        await service.check_key(hsm, body.key_label)
    biller = await service.change_biller(session, code, body, actor=principal.username)
    return biller_out(biller)


@router.post(
    "/billers/{code}/status",
    response_model=BillerOut,
    summary="Suspend, reopen or close a biller (administrator)",
)
@errors(404)
async def set_status(
    code: Code, body: BillerStatusChange, principal: Admin, session: SessionDep
) -> BillerOut:
    """A suspended or closed biller takes no new query or payment; payments in flight finish.
    A closed biller cannot be reopened (409)."""
    biller = await service.set_biller_status(session, code, body.status, actor=principal.username)
    return biller_out(biller)
