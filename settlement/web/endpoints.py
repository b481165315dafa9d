"""The finance pages (docs/finance-pages.md): sign-in, breaks and their maker-checker
resolutions. Thin routes: read the form or query, call the services, render a template."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import date
from typing import Annotated, Final, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

from cardsvc import clock
from cardsvc.api.limits import BodyLimit, body_limit
from cardsvc.audit import service as audit
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind, BreakStatus
from cardsvc.deps import CacheDep, HsmDep, SessionDep, SessionsDep, SettingsDep
from cardsvc.errors import Forbidden, ValidationFailed
from cardsvc.staff import service as staff
from cardsvc.staff.auth import check_roles, issue_token
from settlement.days import service as days
from settlement.merchants import service as merchants
from settlement.resolutions import service as resolutions
from settlement.resolutions.models import Action
from settlement.resolutions.schemas import NewProposal
from settlement.statements import service as statements
from settlement.statements.parsing import MAX_BYTES as STATEMENT_MAX_BYTES
from settlement.statements.parsing import Format
from settlement.web import chart, i18n
from settlement.web.auth import (
    PAGE_ROLES,
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    Posted,
    SignedIn,
    check_csrf,
    csrf_token,
    int_field,
    int_list,
    presession,
    read_form,
    set_cookie,
    text_field,
)
from settlement.web.formatting import csv_cell, yuan
from settlement.web.render import HERE, SECURITY_HEADERS, PageRoute, page, redirect

router = APIRouter(prefix="/finance", route_class=PageRoute, include_in_schema=False)

PAGE_SIZE: Final = 50
EXPORT_MAX_ROWS: Final = 100_000
STATIC: Final = {"finance.css": "text/css; charset=utf-8"}
BreakId = Annotated[int, Path(ge=1, le=2**63 - 1)]
PageNumber = Annotated[int, Query(alias="page", ge=1, le=1_000_000)]


def _next(value: str | None) -> str:
    """Where to go after signing in: a finance page only (never another site)."""
    if value and value.startswith("/finance/") and "//" not in value and "\\" not in value:
        return value
    return "/finance/breaks"


@router.get("/")
async def home() -> Response:
    return redirect("/finance/breaks")


@router.get("/static/{name}")
async def static(name: Annotated[str, Path(max_length=64)]) -> Response:
    media = STATIC.get(name)
    if media is None:
        return Response(status_code=404)
    content = (HERE / "static" / name).read_bytes()
    return Response(content, media_type=media, headers={"Cache-Control": "max-age=3600"})


@router.get("/lang/{code}")
async def choose_language(
    request: Request,
    code: Literal["zh", "en"],
    next: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    response = redirect(_next(next) if next != "/finance/login" else next)
    set_cookie(request, response, i18n.COOKIE, code, 365 * 86400)
    return response


@router.get("/login")
async def login_form(
    request: Request,
    settings: SettingsDep,
    next: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    anchor, fresh = presession(request)
    response = page(
        request, "login.html", csrf=csrf_token(settings, anchor), next=_next(next), failed=None
    )
    if fresh:
        set_cookie(request, response, PRESESSION_COOKIE, anchor, 3600)
    return response


@router.post("/login")
@body_limit(BodyLimit(max_bytes=4096, max_values=16))
async def login(
    request: Request,
    session: SessionDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    cache: CacheDep,
) -> Response:
    form = await read_form(request)
    given = form.get("csrf")
    check_csrf(
        settings, request.cookies.get(PRESESSION_COOKIE), given if isinstance(given, str) else None
    )
    username = text_field(form, "username", required=True, max_length=64) or ""
    password = form.get("password")
    if not isinstance(password, str) or not 1 <= len(password) <= 256:
        raise ValidationFailed("form field 'password' is required (at most 256 characters)")
    target = _next(text_field(form, "next", max_length=300))
    t = i18n.translator(i18n.language(request.cookies.get(i18n.COOKIE)))
    address = request.client.host if request.client else None
    anchor = request.cookies.get(PRESESSION_COOKIE) or ""
    try:
        principal = await staff.authenticate(
            sessions, session, settings, cache, username, password, address=address
        )
    except staff.LoginFailed:
        await session.commit()  # the failure count must survive (the lockout)
        return page(
            request,
            "login.html",
            401,
            csrf=csrf_token(settings, anchor),
            next=target,
            failed=t["login_failed"],
        )
    try:
        check_roles(principal, PAGE_ROLES)
    except Forbidden:
        return page(
            request,
            "login.html",
            403,
            csrf=csrf_token(settings, anchor),
            next=target,
            failed=t["not_finance_role"],
        )
    await audit.record(
        session,
        actor=principal.username,
        action="finance.login",
        entity="staff",
        entity_id=str(principal.id),
    )
    response = redirect(target)
    set_cookie(
        request,
        response,
        SESSION_COOKIE,
        issue_token(settings, principal),
        settings.token_ttl_seconds,
    )
    response.delete_cookie(PRESESSION_COOKIE, path="/finance")
    return response


@router.post("/logout")
async def logout(request: Request, posted: Posted, session: SessionDep) -> Response:
    you, _form = posted
    await staff.end_sessions(session, you.principal.id, actor=you.principal.username)
    response = redirect("/finance/login")
    response.delete_cookie(SESSION_COOKIE, path="/finance")
    return response


# --- days --------------------------------------------------------------------------------------


@router.get("/days")
async def day_list(
    request: Request, you: SignedIn, session: SessionDep, number: PageNumber = 1
) -> Response:
    result = await days.list_days(session, page=number)
    volume = await days.volume(session)
    return page(
        request,
        "days.html",
        page=you,
        result=result,
        chart=chart.build(volume) if volume is not None else None,
        number=number,
        pages=max(1, -(-result.total // days.DAYS_PAGE)),
    )


@router.get("/days/{day}")
async def day_detail(
    request: Request, you: SignedIn, session: SessionDep, day: date, number: PageNumber = 1
) -> Response:
    detail = await days.day_detail(session, day, page=number)
    return page(
        request,
        "day.html",
        page=you,
        day=detail,
        number=number,
        pages=max(1, -(-detail.merchant_total // days.MERCHANTS_PAGE)),
    )


@router.get("/days/{day}/files")
async def day_files(
    request: Request, you: SignedIn, settings: SettingsDep, hsm: HsmDep, day: date
) -> Response:
    """The day's files against its manifest (the HSM verifies the manifest's MAC; no database
    session is open meanwhile)."""
    verification = await days.day_files(settings, hsm, day)
    return page(request, "day_files.html", page=you, day=day, verification=verification)


@router.get("/days/{day}/files/{name}")
async def day_file_download(
    you: SignedIn,
    session: SessionDep,
    settings: SettingsDep,
    day: date,
    name: Annotated[str, Path(max_length=128)],
) -> Response:
    """One file of the day, streamed; audited ``settlement.file_download`` (who, when, which)."""
    found = days.day_file(settings, day, name)
    await audit.record(
        session,
        actor=you.principal.username,
        action="settlement.file_download",
        entity="settlement_file",
        entity_id=f"{day.isoformat()}/{found.name}",
        after={"size": found.size},
    )
    await session.commit()  # the download is recorded before a byte of it leaves
    return FileResponse(
        found.path,
        media_type=found.media_type,
        filename=found.name,
        headers=SECURITY_HEADERS,
    )


# --- merchant statements -----------------------------------------------------------------------

MerchantNo = Annotated[str, Path(pattern=r"^\d{15}$")]
# Text, so that a form's empty field means the default.
DateText = Annotated[str, Query(pattern=r"^(\d{4}-\d{2}-\d{2})?$")]


def _period(
    settings: SettingsDep, date_from: DateText = "", date_to: DateText = ""
) -> tuple[date, date]:
    try:
        first = date.fromisoformat(date_from) if date_from else None
        last = date.fromisoformat(date_to) if date_to else None
    except ValueError as exc:
        raise ValidationFailed(f"not a date: {exc}") from None
    return merchants.period(first, last, settings.local_date(clock.now()))


Period = Annotated[tuple[date, date], Depends(_period)]


@router.get("/merchants")
async def merchant_list(
    request: Request,
    you: SignedIn,
    session: SessionDep,
    q: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    found = await merchants.find_merchants(session, q.strip())
    return page(request, "merchants.html", page=you, merchants=found, q=q)


@router.get("/merchants/{merchant_no}/statement")
async def merchant_statement(
    request: Request, you: SignedIn, session: SessionDep, merchant_no: MerchantNo, period: Period
) -> Response:
    found = await merchants.statement(session, merchant_no, *period)
    return page(request, "merchant_statement.html", page=you, statement=found)


MERCHANT_CSV_COLUMNS: Final = (
    "merchant_no", "merchant_name", "clearing_date", "class", "count", "gross", "fee", "net",
    "batch_status",
)  # fmt: skip


@router.get("/merchants/{merchant_no}/statement.csv")
async def merchant_statement_export(
    you: SignedIn,
    session: SessionDep,
    sessions: SessionsDep,
    merchant_no: MerchantNo,
    period: Period,
) -> Response:
    """The merchant's lines over the period as CSV (UTF-8 with a byte order mark, CRLF, amounts
    in yuan, text cells escaped against formulas); audited ``merchant_statement.export``."""
    merchant = await merchants.merchant_of(session, merchant_no)
    first, last = period
    await audit.record(
        session,
        actor=you.principal.username,
        action="merchant_statement.export",
        entity="merchant",
        entity_id=merchant_no,
        after={"from": first.isoformat(), "to": last.isoformat()},
    )

    async def rows() -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(MERCHANT_CSV_COLUMNS)
        yield "\ufeff" + out.getvalue()
        async with sessions() as reading:
            _found, found_rows = await merchants.export_rows(reading, merchant_no, first, last)
            async for row in found_rows:
                out.seek(0)
                out.truncate()
                writer.writerow(
                    (
                        csv_cell(merchant.merchant_no),
                        csv_cell(merchant.name),
                        row.clearing_date.isoformat(),
                        csv_cell(row.tx_class),
                        row.count,
                        yuan(row.gross).replace(",", ""),
                        yuan(row.fee).replace(",", ""),
                        yuan(row.gross - row.fee).replace(",", ""),
                        row.batch_status.value if row.batch_status else "",
                    )
                )
                yield out.getvalue()

    filename = f"statement-{merchant_no}-{first.isoformat()}-{last.isoformat()}.csv"
    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'},
    )


# --- bank statements ---------------------------------------------------------------------------

StatementId = Annotated[int, Path(ge=1, le=2**63 - 1)]
# The file, its boundary and the two small fields.
STATEMENT_UPLOAD: Final = BodyLimit(max_bytes=STATEMENT_MAX_BYTES + 16 * 1024, max_values=16)


@router.get("/statements")
async def statement_list(
    request: Request, you: SignedIn, session: SessionDep, number: PageNumber = 1
) -> Response:
    result = await statements.list_statements(session, page=number)
    return page(
        request,
        "statements.html",
        page=you,
        result=result,
        number=number,
        pages=max(1, -(-result.total // statements.STATEMENTS_PAGE)),
    )


@router.post("/statements")
@body_limit(STATEMENT_UPLOAD)
async def statement_import(posted: Posted, session: SessionDep) -> Response:
    """Import the uploaded statement file (docs/bank-statements.md, "Import")."""
    you, form = posted
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ValidationFailed("form field 'file' is required (the statement file)")
    data = await upload.read(STATEMENT_MAX_BYTES + 1)
    chosen = text_field(form, "format", max_length=16) or "auto"
    if chosen not in ("auto", *Format.__members__):
        raise ValidationFailed("form field 'format' is auto, csv or camt053")
    imported = await statements.import_statement(
        session,
        you.principal,
        data,
        format=None if chosen == "auto" else Format(chosen),
        payouts=statements.payouts_port(),
    )
    notice = "replayed" if imported.replayed else "imported"
    return redirect(f"/finance/statements/{imported.statement.id}?notice={notice}")


@router.get("/statements/{statement_id}")
async def statement_detail(
    request: Request,
    you: SignedIn,
    session: SessionDep,
    statement_id: StatementId,
    number: PageNumber = 1,
    notice: Annotated[Literal["imported", "replayed", ""], Query()] = "",
) -> Response:
    detail = await statements.statement_detail(session, statement_id, page=number)
    return page(
        request,
        "statement.html",
        page=you,
        detail=detail,
        notice=notice,
        number=number,
        pages=max(1, -(-detail.statement.line_count // statements.LINES_PAGE)),
    )


# --- breaks ------------------------------------------------------------------------------------

StatusChoice = Literal["open", "resolved", "all"]


class _Filters:
    def __init__(
        self,
        status: Annotated[StatusChoice, Query()] = "open",
        kind: Annotated[str, Query(max_length=32)] = "",
        # Text, so that a form's empty field means "no bound".
        date_from: Annotated[str, Query(pattern=r"^(\d{4}-\d{2}-\d{2})?$")] = "",
        date_to: Annotated[str, Query(pattern=r"^(\d{4}-\d{2}-\d{2})?$")] = "",
        asn: Annotated[str, Query(max_length=16, pattern=r"^[0-9A-Fa-f]{0,16}$")] = "",
        terminal_no: Annotated[str, Query(max_length=12, pattern=r"^\d{0,12}$")] = "",
        reference: Annotated[str, Query(max_length=64)] = "",
        sort: Annotated[str, Query(max_length=16)] = "id",
        dir: Annotated[Literal["asc", "desc"], Query()] = "desc",
    ) -> None:
        if kind and kind not in BreakKind.__members__:
            raise ValidationFailed(f"no break kind {kind!r}")
        if sort not in breaks.SORTS:
            raise ValidationFailed(f"sort by one of: {', '.join(breaks.SORTS)}")
        self.status, self.kind, self.sort, self.dir = status, kind, sort, dir
        try:
            self.date_from = date.fromisoformat(date_from) if date_from else None
            self.date_to = date.fromisoformat(date_to) if date_to else None
        except ValueError as exc:
            raise ValidationFailed(f"not a date: {exc}") from None
        self.asn, self.terminal_no, self.reference = asn, terminal_no, reference

    def where(self) -> breaks.BreakFilter:
        return breaks.BreakFilter(
            status=None if self.status == "all" else BreakStatus(self.status),
            kinds=(BreakKind(self.kind),) if self.kind else (),
            date_from=self.date_from,
            date_to=self.date_to,
            asn=self.asn or None,
            terminal_no=self.terminal_no or None,
            reference=self.reference or None,
        )


Filters = Annotated[_Filters, Depends(_Filters)]


@router.get("/breaks")
async def break_list(
    request: Request,
    you: SignedIn,
    session: SessionDep,
    filters: Filters,
    number: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
) -> Response:
    result = await breaks.search_breaks(
        session,
        filters.where(),
        sort=filters.sort,
        descending=filters.dir == "desc",
        offset=(number - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    pages = max(1, -(-result.total // PAGE_SIZE))
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]

    def page_link(n: int) -> str:
        return "/finance/breaks?" + urlencode([*kept, ("page", str(n))])

    waiting = await resolutions.pending_of(session, [item.id for item in result.items])
    return page(
        request,
        "breaks.html",
        page=you,
        result=result,
        filters=filters,
        kinds=[k.value for k in BreakKind],
        sorts=breaks.SORTS,
        number=number,
        pages=pages,
        page_link=page_link,
        waiting=waiting,
    )


CSV_COLUMNS: Final = (
    "id", "kind", "status", "clearing_date", "amount_yuan", "reason", "source", "source_id",
    "asn", "counter", "terminal_no", "reference", "created_at", "resolver", "resolution", "note",
    "resolved_at",
)  # fmt: skip


@router.get("/breaks.csv")
async def break_export(
    you: SignedIn, session: SessionDep, sessions: SessionsDep, filters: Filters
) -> Response:
    """Every break that matches (at most 100 000 rows), as CSV (UTF-8 with a byte order mark,
    so that spreadsheets read the Chinese), its cells escaped against formulas."""
    where = filters.where()
    await audit.record(
        session,
        actor=you.principal.username,
        action="break.export",
        entity="break_items",
        entity_id="csv",
        after={"status": filters.status, "kind": filters.kind or None},
    )

    async def rows() -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        yield "\ufeff" + out.getvalue()
        offset = 0
        async with sessions() as reading:
            while offset < EXPORT_MAX_ROWS:
                chunk = await breaks.search_breaks(
                    reading,
                    where,
                    sort=filters.sort,
                    descending=filters.dir == "desc",
                    offset=offset,
                    limit=breaks.MAX_PAGE,
                )
                out.seek(0)
                out.truncate()
                for item in chunk.items:
                    writer.writerow(
                        csv_cell(value)
                        for value in (
                            item.id,
                            item.kind.value,
                            item.status.value,
                            item.clearing_date,
                            yuan(item.amount).replace(",", ""),
                            item.reason,
                            item.source,
                            item.source_id,
                            item.asn,
                            item.counter,
                            item.terminal_no,
                            item.reference,
                            item.created_at.isoformat(),
                            item.resolver,
                            item.resolution,
                            item.note,
                            item.resolved_at.isoformat() if item.resolved_at else None,
                        )
                    )
                yield out.getvalue()
                if len(chunk.items) < breaks.MAX_PAGE:
                    break
                offset += breaks.MAX_PAGE

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={**SECURITY_HEADERS, "Content-Disposition": 'attachment; filename="breaks.csv"'},
    )


@router.get("/breaks/{break_id}")
async def break_detail(
    request: Request, you: SignedIn, session: SessionDep, break_id: BreakId
) -> Response:
    item = await breaks.get_break(session, break_id)
    proposals = await resolutions.of_break(session, break_id)
    return page(
        request,
        "break.html",
        page=you,
        item=item,
        proposals=proposals,
        pending=any(p.status.value == "proposed" for p in proposals),
        actions=[a.value for a in Action],
        batch=False,
    )


@router.post("/breaks/{break_id}/proposals")
async def propose(posted: Posted, session: SessionDep, break_id: BreakId) -> Response:
    you, form = posted
    action = text_field(form, "action", required=True, max_length=32) or ""
    if action not in Action.__members__:
        raise ValidationFailed(f"no action {action!r}")
    new = NewProposal(
        action=Action(action),
        amount=int_field(form, "amount"),
        target=text_field(form, "target", max_length=32),
        note=text_field(form, "note", required=True, max_length=500) or "",
    )
    await resolutions.propose(session, you.principal, break_id, new)
    return redirect(f"/finance/breaks/{break_id}")


@router.post("/proposals/{proposal_id}/approve")
async def approve(
    posted: Posted, session: SessionDep, settings: SettingsDep, proposal_id: BreakId
) -> Response:
    you, _form = posted
    decided = await resolutions.approve(session, settings, you.principal, proposal_id)
    return redirect(f"/finance/breaks/{decided.break_id}")


@router.post("/proposals/{proposal_id}/reject")
async def reject(posted: Posted, session: SessionDep, proposal_id: BreakId) -> Response:
    you, _form = posted
    decided = await resolutions.reject(session, you.principal, proposal_id)
    return redirect(f"/finance/breaks/{decided.break_id}")


@router.get("/approvals")
async def approvals(request: Request, you: SignedIn, session: SessionDep) -> Response:
    return page(
        request,
        "approvals.html",
        page=you,
        proposals=await resolutions.pending(session),
        decisions=None,
        batch=True,
    )


@router.post("/approvals")
async def approve_selected(
    request: Request, posted: Posted, session: SessionDep, settings: SettingsDep
) -> Response:
    """Approve every proposal ticked: each on its own (one refused leaves the others approved);
    the page lists what happened to each."""
    you, form = posted
    chosen = int_list(form, "proposal", most=resolutions.MAX_BATCH)
    decisions = await resolutions.approve_many(session, settings, you.principal, chosen)
    return page(
        request,
        "approvals.html",
        page=you,
        proposals=await resolutions.pending(session),
        decisions=decisions,
        batch=True,
    )
