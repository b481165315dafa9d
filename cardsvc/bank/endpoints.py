"""Bank credit routes (docs/bank-credits.md): the bank's signed notifications and credit files,
and finance's work on credits in suspense."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from cardsvc.api.limits import BodyLimit, GuardedRoute, body_limit, parse_json
from cardsvc.api.openapi import documents_body, signed_by_bank
from cardsvc.bank import service
from cardsvc.bank.models import BankCredit, CreditSource, CreditStatus
from cardsvc.bank.schemas import (
    AssignIn,
    CreditDetail,
    CreditIn,
    CreditOut,
    FileLineOut,
    FileOut,
)
from cardsvc.deps import HsmDep, SessionDep, SettingsDep
from cardsvc.settings import Settings
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles

router = APIRouter(prefix="/bank", tags=["bank credits"], route_class=GuardedRoute)

FINANCE_ROLES = (Role.finance,)
READER_ROLES = (Role.finance, Role.auditor)
Finance = Annotated[StaffPrincipal, Depends(require_roles(*FINANCE_ROLES))]
Reader = Annotated[StaffPrincipal, Depends(require_roles(*READER_ROLES))]

NOTIFICATION_LIMIT = BodyLimit(max_bytes=4096, max_values=32)
CreditId = Annotated[int, Path(ge=1, le=2**62)]


def file_limit(settings: Settings) -> BodyLimit:
    # A credit line is at most about 250 bytes (35 + 40 + 11 + 10 + 64 UTF-8 characters).
    lines = settings.bank_credit_file_max_lines
    return BodyLimit(max_bytes=1024 + 400 * lines, max_values=8 * lines)


def credit_out(row: BankCredit, *, replayed: bool = False) -> CreditOut:
    return CreditOut(
        id=row.id,
        bank_code=row.bank_code,
        bank_reference=row.bank_reference,
        source=row.source,
        amount=row.amount,
        value_date=row.value_date,
        status=row.status,
        ledger_transaction_id=row.ledger_transaction_id,
        clearing_date=row.clearing_date,
        replayed=replayed,
    )


async def credit_detail(session: SessionDep, row: BankCredit) -> CreditDetail:
    refs = await service.references(session, row.account_id, row.proposed_account_id)
    return CreditDetail(
        **credit_out(row).model_dump(),
        account_reference_given=row.account_reference_given,
        account_reference=refs.get(row.account_id) if row.account_id else None,
        payer_masked=row.payer_masked,
        break_id=row.break_id,
        proposed_account_reference=(
            refs.get(row.proposed_account_id) if row.proposed_account_id else None
        ),
        proposed_by=row.proposed_by,
        assigned_by=row.assigned_by,
        assign_transaction_id=row.assign_transaction_id,
        created_at=row.created_at,
        resolved_at=row.resolved_at,
    )


@router.post("/credits", response_model=CreditOut, summary="A bank's credit notification (signed)")
@body_limit(NOTIFICATION_LIMIT)
@documents_body(CreditIn)
@signed_by_bank
async def notify(
    request: Request, session: SessionDep, hsm: HsmDep, settings: SettingsDep
) -> CreditOut:
    """Headers ``X-Bank-Code`` and ``X-Bank-Signature`` (hex HMAC-SHA256 of the exact body under
    the bank's key); verified before the body is parsed. A repeat answers the first booking."""
    body = await request.body()
    bank_code = request.headers.get("x-bank-code", "")
    await service.verify_signature(
        hsm, settings, bank_code, body, request.headers.get("x-bank-signature")
    )
    credit = await parse_json(request, CreditIn)
    outcome = await service.receive(session, settings, bank_code, credit, CreditSource.notification)
    assert outcome.credit is not None  # noqa: S101 - a notification's conflict raises
    return credit_out(outcome.credit, replayed=outcome.replayed)


@router.post(
    "/credit-files",
    response_model=FileOut,
    summary="Import a bank's credit file, signed by the bank (finance)",
)
@body_limit(file_limit)
async def import_file(
    request: Request,
    principal: Finance,
    session: SessionDep,
    hsm: HsmDep,
    settings: SettingsDep,
) -> FileOut:
    """The body is the file itself (``text/csv``, UTF-8); headers ``X-Bank-Code`` and
    ``X-Bank-Signature`` as for a notification. A file with a bad line books nothing (422 naming
    the lines); importing a file again books nothing twice."""
    content = await request.body()
    bank_code = request.headers.get("x-bank-code", "")
    await service.verify_signature(
        hsm, settings, bank_code, content, request.headers.get("x-bank-signature")
    )
    result = await service.import_file(
        session, settings, bank_code, content, actor=principal.username
    )
    return FileOut(
        bank_code=bank_code,
        lines=len(result.lines),
        posted=result.count("posted"),
        suspense=result.count("suspense"),
        replayed=result.count("replayed"),
        conflicts=result.count("conflict"),
        amount_posted=result.amount_posted,
        amount_suspense=result.amount_suspense,
        results=[
            FileLineOut(line=n, bank_reference=ref, status=status, credit_id=credit_id)
            for n, ref, status, credit_id in result.lines
        ],
    )


@router.get(
    "/credits", response_model=list[CreditDetail], summary="Bank credits, by id (finance, auditor)"
)
async def list_credits(
    principal: Reader,
    session: SessionDep,
    status: CreditStatus | None = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[CreditDetail]:
    rows = await service.listing(session, status=status, after_id=after, limit=limit)
    return [await credit_detail(session, row) for row in rows]


@router.get(
    "/credits/{credit_id}", response_model=CreditDetail, summary="A bank credit (finance, auditor)"
)
async def get_credit(credit_id: CreditId, principal: Reader, session: SessionDep) -> CreditDetail:
    return await credit_detail(session, await service.get(session, credit_id))


@router.post(
    "/credits/{credit_id}/proposal",
    response_model=CreditDetail,
    summary="Propose the account of a credit in suspense (finance)",
)
async def propose(
    credit_id: CreditId, body: AssignIn, principal: Finance, session: SessionDep
) -> CreditDetail:
    row = await service.propose(
        session, credit_id, body.account_reference, actor=principal.username
    )
    return await credit_detail(session, row)


@router.post(
    "/credits/{credit_id}/proposal/approve",
    response_model=CreditDetail,
    summary="Move a credit in suspense to the proposed account (finance; not the proposer)",
)
async def approve(
    credit_id: CreditId, principal: Finance, session: SessionDep, settings: SettingsDep
) -> CreditDetail:
    row = await service.approve(session, settings, credit_id, actor=principal.username)
    return await credit_detail(session, row)
