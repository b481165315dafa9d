"""Bills routes (docs/bills.md): the billers registry (administrator), bill queries and
payments at counters, payments' states, and the billers' callbacks."""

from __future__ import annotations

import json
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import ValidationError
from starlette.datastructures import State

from cardsvc.api.errors import InputRefused
from cardsvc.api.limits import BodyLimit, GuardedRoute, body_limit, decode_json, route_limit
from cardsvc.api.openapi import documents_body, errors, signed_by_biller
from cardsvc.bills import service, tasks
from cardsvc.bills.adapter import BillerClient, biller_http
from cardsvc.bills.models import Biller, BillerStatus, BillPayment, SubChannel
from cardsvc.bills.schemas import (
    BankDetails,
    BillerChange,
    BillerIn,
    BillerOut,
    BillerStatusChange,
    CallbackAck,
    CallbackIn,
    CashReturnIn,
    CounterPaymentIn,
    FeeRule,
    PaymentOut,
    PresentmentOut,
    QueryIn,
    ResidentPaymentIn,
)
from cardsvc.db import unit_of_work
from cardsvc.deps import HsmDep, SessionDep, SessionsDep, SettingsDep
from cardsvc.selfservice.deps import CurrentResident
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


# --- query, payments, callbacks -------------------------------------------------------------

COUNTER_ROLES = (Role.counter_operator, Role.supervisor)
Counter = Annotated[StaffPrincipal, Depends(require_roles(*COUNTER_ROLES))]
PaymentReader = Annotated[
    StaffPrincipal,
    Depends(require_roles(Role.counter_operator, Role.supervisor, Role.finance, Role.auditor)),
]
SerialPath = Annotated[str, Path(pattern=r"^B[0-9]{11}$")]


async def biller_client(request: Request, hsm: HsmDep, settings: SettingsDep) -> BillerClient:
    """The app's one HTTP client for the billers (its connections kept alive between requests),
    opened on first use and closed with the app (:func:`close_biller_http`)."""
    state = request.app.state
    http: httpx.AsyncClient | None = getattr(state, "biller_http", None)
    if http is None:
        http = state.biller_http = biller_http()
    return BillerClient(http, hsm, settings.bills_channel_id, settings.bills_timeout_seconds)


async def close_biller_http(state: State) -> None:
    """At the app's shutdown: close the billers' HTTP client if a request opened it."""
    http: httpx.AsyncClient | None = getattr(state, "biller_http", None)
    if http is not None:
        state.biller_http = None
        await http.aclose()


BillerClientDep = Annotated[BillerClient, Depends(biller_client)]


def presentment_out(found: service.Presented) -> PresentmentOut:
    return PresentmentOut(
        biller=found.biller_code, bill_key=found.bill_key, reference=found.reference,
        bill_id=found.bill_id, holder_masked=found.holder_masked, amount_due=found.amount_due,
        late_fee=found.late_fee, period=found.period, due_date=found.due_date,
        partial_allowed=found.partial_allowed, min_amount=found.min_amount,
        expires_at=found.expires_at,
    )  # fmt: skip


def payment_out(payment: BillPayment, *, replayed: bool = False) -> PaymentOut:
    counter = payment.submit_scope.startswith("counter:")
    return PaymentOut(
        serial=str(payment.serial), state=payment.status.visible, status=payment.status,
        sub_channel=payment.sub_channel, biller=payment.biller_code, bill_key=payment.bill_key,
        bill_id=payment.bill_id, period=payment.period, amount=payment.amount,
        receipt_no=payment.receipt_no, reason=payment.reason,
        clearing_date=payment.clearing_date, paid_at=payment.paid_at,
        decided_at=payment.decided_at, counter_code=payment.counter_code,
        receipt=payment.submit_key if counter else None,
        cash_returned_at=payment.cash_returned_at, replayed=replayed,
    )  # fmt: skip


@router.post(
    "/query",
    response_model=PresentmentOut,
    summary="Ask a biller what is due on a bill key (counter, supervisor)",
)
@errors(404, 409, 429, 503)
async def query(
    body: QueryIn, principal: Counter, sessions: SessionsDep, client: BillerClientDep
) -> PresentmentOut:
    """Checks in order: the biller exists (404 `NotFound`) and is active (409
    `BillerSuspended`); the bill key matches its pattern (422 `BillKeyInvalid`, the biller is
    not asked); then the biller's answer: 404 `NoSuchCustomer`, 409 `NothingDue`, 429
    `BillerBusy`, 503 `BillerNotAnswering` (down, timeout, bad signature). The presentment is
    kept for the payment (docs/bills.md §4)."""
    found = await service.query_bill(sessions, client, body.biller, body.bill_key, body.period)
    return presentment_out(found)


@router.post(
    "/payments/counter",
    response_model=PaymentOut,
    status_code=201,
    summary="A bill paid in cash at a counter, once per receipt number (counter, supervisor)",
)
@errors(404, 409)
async def pay_at_counter(
    body: CounterPaymentIn, principal: Counter, session: SessionDep, settings: SettingsDep
) -> PaymentOut:
    """The cash goes into the counter's drawer and is held for the biller; the biller is paid
    after commit (the state is `pending` until it answers). A repeat of the receipt number with
    the same content answers the first payment (`replayed`); with other content 409
    `IdempotencyConflict` (docs/bills.md §5)."""
    found = await service.submit_payment(
        session, settings,
        service.Payer(SubChannel.counter, counter_code=body.counter_code,
                      operator=principal.username),
        biller_code=body.biller, reference=body.reference, amount=body.amount,
        key=body.receipt_no,
    )  # fmt: skip
    return payment_out(found.payment, replayed=found.replayed)


@router.get(
    "/payments/{serial}",
    response_model=PaymentOut,
    summary="A bill payment and its state (counter, supervisor, finance, auditor)",
)
@errors(404)
async def get_payment(
    serial: SerialPath, principal: PaymentReader, session: SessionDep
) -> PaymentOut:
    return payment_out(await service.payment_by_serial(session, serial))


@router.post(
    "/payments/{serial}/cash-return",
    response_model=PaymentOut,
    summary="Hand back the cash of a counter payment that did not pay (counter, supervisor)",
)
@errors(404, 409)
async def cash_return(
    serial: SerialPath,
    body: CashReturnIn,
    principal: Counter,
    session: SessionDep,
    settings: SettingsDep,
) -> PaymentOut:
    """Only a `failed`, `reversed` or `refunded` counter payment, at the counter that took the
    cash (409 otherwise); a repeat answers the same."""
    payment = await service.return_cash(
        session, settings, serial, counter_code=body.counter_code, actor=principal.username
    )
    return payment_out(payment)


CALLBACK_LIMIT = 16 * 1024


@router.post(
    "/callbacks/{code}",
    response_model=CallbackAck,
    summary="A biller's decision of a pending payment (signed by the biller)",
)
@body_limit(BodyLimit(max_bytes=CALLBACK_LIMIT, max_values=64))
@documents_body(CallbackIn)
@signed_by_biller
@errors(400, 401, 404, 409)
async def callback(
    code: Code,
    request: Request,
    sessions: SessionsDep,
    settings: SettingsDep,
    hsm: HsmDep,
) -> Response:
    """docs/biller-protocol.md §7. Checks in order, before the body is parsed: the biller is
    registered and the five signature headers are well formed (401), the timestamp is within
    300 s (401), the signature verifies under the biller's key (401); then the body (400
    `BadRequest`), the serial is a payment of this biller (404), the decision agrees with one
    already recorded (409 `ResultConflict`). Duplicates are acknowledged again. Every answer
    but a 401 is signed."""
    raw = await request.body()
    async with sessions() as read:
        biller = await service.callback_biller(read, code)
    path = request.url.path
    envelope = await service.verify_callback(
        hsm, settings, biller, path, dict(request.headers), raw
    )
    try:
        parsed = CallbackIn.model_validate(decode_json(raw, route_limit(request.scope)))
        async with unit_of_work(sessions) as write:
            await tasks.apply_callback(write, settings, code, parsed.model_dump(exclude_none=True))
        status, answer = 200, {"result": "ack"}
    except (ValidationError, InputRefused) as exc:
        status, answer = 400, {"error": "BadRequest", "detail": str(exc).partition("\n")[0][:200]}
    except (service.PaymentNotFound, service.ResultConflict) as exc:
        status, answer = exc.status_code, {"error": type(exc).__name__, "detail": exc.detail}
    body = json.dumps(answer, separators=(",", ":")).encode()
    headers = await service.sign_answer(hsm, settings, biller, path, envelope.key, status, body)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


# --- the resident's own (self-service) ------------------------------------------------------

me_router = APIRouter(prefix="/me/bills", tags=["self-service"], route_class=GuardedRoute)


@me_router.post(
    "/query", response_model=PresentmentOut, summary="The resident asks what is due on a bill"
)
@errors(404, 409, 429, 503)
async def my_query(
    body: QueryIn, resident: CurrentResident, sessions: SessionsDep, client: BillerClientDep
) -> PresentmentOut:
    """As the counter's query (docs/bills.md §4)."""
    found = await service.query_bill(sessions, client, body.biller, body.bill_key, body.period)
    return presentment_out(found)


@me_router.post(
    "/payments",
    response_model=PaymentOut,
    status_code=201,
    summary="The resident pays a bill from the online account",
)
@errors(404, 409)
async def my_payment(
    body: ResidentPaymentIn, resident: CurrentResident, session: SessionDep, settings: SettingsDep
) -> PaymentOut:
    """The money is held on the resident's account and the biller paid after commit (state
    `pending` until it answers). Checks and refusals as docs/bills.md §5; a repeat of the
    `idempotency_key` answers the first payment (`replayed`), other content 409
    `IdempotencyConflict`; 409 `InsufficientFunds` when the account's available balance is
    short."""
    found = await service.pay_from_account(
        session, settings, resident.resident_id, biller_code=body.biller,
        reference=body.reference, amount=body.amount, key=body.idempotency_key,
    )  # fmt: skip
    return payment_out(found.payment, replayed=found.replayed)


@me_router.get(
    "/payments",
    response_model=list[PaymentOut],
    summary="The resident's bill payments and their states, newest first",
)
async def my_payments(
    resident: CurrentResident,
    session: SessionDep,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="a page's last id")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> list[PaymentOut]:
    found = await service.payments_of_resident(
        session, resident.resident_id, before_id=before, limit=limit
    )
    return [payment_out(p) for p in found]
