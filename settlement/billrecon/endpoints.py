"""Finance routes of the billers' daily reconciliation (docs/bills.md §11): where each biller's
file of a day stands, its answer, and the file itself."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from cardsvc.api.limits import GuardedRoute
from cardsvc.deps import SessionDep
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles
from settlement.billrecon import service
from settlement.billrecon.models import BillReconciliation
from settlement.billrecon.schemas import ReconciliationDetail, ReconciliationOut

router = APIRouter(prefix="/settlement", tags=["settlement"], route_class=GuardedRoute)

Reader = Annotated[
    StaffPrincipal, Depends(require_roles(Role.finance, Role.administrator, Role.auditor))
]
Finance = Annotated[StaffPrincipal, Depends(require_roles(Role.finance, Role.administrator))]
BillerCode = Annotated[str, Path(pattern=r"^[A-Z0-9_]{2,16}$")]
Day = Annotated[date, Path()]


def _out(row: BillReconciliation) -> dict[str, object]:
    return {
        "clearing_date": row.clearing_date, "biller_code": row.biller_code, "status": row.status,
        "file_name": row.file_name, "file_sha256": row.file_sha256, "count": row.count,
        "sum": row.total, "ledger_count": row.ledger_count, "ledger_sum": row.ledger_total,
        "attempts": row.attempts, "next_attempt_at": row.next_attempt_at,
        "last_error": row.last_error, "disagreements": row.disagreements,
        "sent_at": row.sent_at, "answered_at": row.answered_at,
    }  # fmt: skip


@router.get(
    "/bill-reconciliations",
    response_model=list[ReconciliationOut],
    summary="Each biller's reconciliation of a clearing date (finance, administrator, auditor)",
)
async def list_reconciliations(
    _principal: Reader, session: SessionDep, day: Annotated[date, Query(alias="date")]
) -> list[ReconciliationOut]:
    rows = await service.day_status(session, day)
    return [ReconciliationOut.model_validate(_out(r)) for r in rows]


@router.get(
    "/bill-reconciliations/{day}/{biller_code}",
    response_model=ReconciliationDetail,
    summary="One biller's reconciliation of a day, with its answer (finance, administrator, "
    "auditor)",
)
async def get_reconciliation(
    day: Day, biller_code: BillerCode, _principal: Reader, session: SessionDep
) -> ReconciliationDetail:
    row = await service.one(session, day, biller_code)
    answer = json.loads(row.answer) if row.answer else None
    return ReconciliationDetail.model_validate({**_out(row), "answer": answer})


@router.get(
    "/bill-reconciliations/{day}/{biller_code}/file",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "the file as sent"}},
    summary="The reconciliation file as built (finance, administrator, auditor)",
)
async def get_file(
    day: Day, biller_code: BillerCode, _principal: Reader, session: SessionDep
) -> Response:
    row = await service.one(session, day, biller_code)
    return Response(
        row.file_text.encode("utf-8"),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{row.file_name}"'},
    )


@router.post(
    "/bill-reconciliations/{day}/{biller_code}/resend",
    response_model=ReconciliationOut,
    summary="Send an answered reconciliation file to the biller again (finance, administrator)",
    description="The file goes back to `sending`, due at once; the `bill-reconciliation` job "
    "sends it on its next pass and records the biller's fresh answer (docs/bills.md §11). A file "
    "still being sent is answered as it is; 409 `InvalidStateTransition` for an unbalanced file.",
)
async def resend(
    day: Day, biller_code: BillerCode, principal: Finance, session: SessionDep
) -> ReconciliationOut:
    row = await service.resend(session, day, biller_code, actor=principal.username)
    return ReconciliationOut.model_validate(_out(row))
