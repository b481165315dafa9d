"""Fee rule routes (docs/fees.md): finance adds and retires rules; finance and auditors list them."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from cardsvc.api.limits import GuardedRoute
from cardsvc.deps import SessionDep
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles
from settlement.fees import service
from settlement.fees.schemas import FeeRuleCreate, FeeRuleOut

router = APIRouter(prefix="/settlement", tags=["settlement"], route_class=GuardedRoute)

Finance = Annotated[StaffPrincipal, Depends(require_roles(Role.finance))]
Reader = Annotated[StaffPrincipal, Depends(require_roles(Role.finance, Role.auditor))]
RuleId = Annotated[int, Path(ge=1, le=2**62)]


@router.post(
    "/fee-rules",
    response_model=FeeRuleOut,
    status_code=status.HTTP_201_CREATED,
    summary="Add a fee rule (finance)",
)
async def add_rule(body: FeeRuleCreate, principal: Finance, session: SessionDep) -> FeeRuleOut:
    return await service.add_rule(session, body, actor=principal.username)


@router.get(
    "/fee-rules", response_model=list[FeeRuleOut], summary="Fee rules, by id (finance, auditor)"
)
async def list_rules(
    _principal: Reader,
    session: SessionDep,
    merchant_no: Annotated[str | None, Query(pattern=r"^\d{15}$")] = None,
    on: Annotated[date | None, Query(description="Only rules in force on this day.")] = None,
    retired: bool = False,
) -> list[FeeRuleOut]:
    return await service.list_rules(
        session, merchant_no=merchant_no, on=on, include_retired=retired
    )


@router.post(
    "/fee-rules/{rule_id}/retire", response_model=FeeRuleOut, summary="Retire a fee rule (finance)"
)
async def retire_rule(rule_id: RuleId, principal: Finance, session: SessionDep) -> FeeRuleOut:
    return await service.retire_rule(session, rule_id, actor=principal.username)
