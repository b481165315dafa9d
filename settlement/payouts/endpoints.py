"""Payee and payout routes (docs/payouts.md): finance and administrators set a merchant's cycle
and bank details; finance and auditors read them and the day's payouts."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from cardsvc.api.limits import GuardedRoute
from cardsvc.deps import SessionDep
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles
from settlement.payouts import service
from settlement.payouts.schemas import PayeeIn, PayeeOut, PayoutOut

router = APIRouter(prefix="/settlement", tags=["settlement"], route_class=GuardedRoute)

Writer = Annotated[StaffPrincipal, Depends(require_roles(Role.finance, Role.administrator))]
Reader = Annotated[
    StaffPrincipal, Depends(require_roles(Role.finance, Role.administrator, Role.auditor))
]
MerchantNo = Annotated[str, Path(pattern=r"^\d{15}$")]


@router.get(
    "/payees",
    response_model=list[PayeeOut],
    summary="Every merchant's cycle and bank details (finance, administrator, auditor)",
)
async def list_payees(_principal: Reader, session: SessionDep) -> list[PayeeOut]:
    return await service.list_payees(session)


@router.get(
    "/payees/{merchant_no}",
    response_model=PayeeOut,
    summary="A merchant's cycle and bank details (finance, administrator, auditor)",
)
async def get_payee(merchant_no: MerchantNo, _principal: Reader, session: SessionDep) -> PayeeOut:
    return await service.get_payee(session, merchant_no)


@router.put(
    "/payees/{merchant_no}",
    response_model=PayeeOut,
    summary="Set a merchant's cycle and bank details (finance, administrator)",
)
async def set_payee(
    merchant_no: MerchantNo, body: PayeeIn, principal: Writer, session: SessionDep
) -> PayeeOut:
    return await service.set_payee(session, merchant_no, body, actor=principal.username)


@router.get(
    "/payouts",
    response_model=list[PayoutOut],
    summary="The payouts of a clearing date, by reference (finance, administrator, auditor)",
)
async def list_payouts(
    _principal: Reader,
    session: SessionDep,
    day: Annotated[date, Query(alias="date")],
) -> list[PayoutOut]:
    return [
        PayoutOut(
            reference=p.reference,
            payee_kind=p.payee_kind,
            merchant_no=p.merchant_no,
            merchant_name=p.merchant_name,
            amount=p.amount,
            bank_name=p.bank_name,
            bank_branch=p.bank_branch,
            account_no=p.account_no,
            account_holder=p.account_holder,
            status=p.status,
        )
        for p in await service.day_payouts(session, day)
    ]
