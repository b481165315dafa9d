"""Online authorization routes: thin; every one is a signed terminal request (AuthenticatedTerminal)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from cardsvc.api.limits import GuardedRoute
from cardsvc.deps import HsmDep, SessionDep, SessionsDep, SettingsDep
from terminals.access.auth import (
    AuthenticatedTerminal,
    VerifiedTerminal,
    signed_body,
    verified_body,
)
from terminals.online import service
from terminals.online.models import MessageKind
from terminals.online.schemas import (
    AuthorizationResponse,
    CompletionRequest,
    PurchaseRequest,
    RefundRequest,
    ReversalRequest,
)

router = APIRouter(prefix="/online", tags=["online authorization"], route_class=GuardedRoute)


@router.post("/purchase", response_model=AuthorizationResponse)
async def purchase(
    signed: VerifiedTerminal,
    body: Annotated[PurchaseRequest, verified_body(PurchaseRequest)],
    session: SessionDep,
    sessions: SessionsDep,
    hsm: HsmDep,
    settings: SettingsDep,
) -> AuthorizationResponse:
    """Pay from the card holder's online account at once (the holder's PIN checked first)."""
    outcome = await service.authorize(
        sessions, session, signed, body, kind=MessageKind.purchase, hsm=hsm, settings=settings
    )
    return outcome.response()


@router.post("/preauth", response_model=AuthorizationResponse)
async def preauth(
    signed: VerifiedTerminal,
    body: Annotated[PurchaseRequest, verified_body(PurchaseRequest)],
    session: SessionDep,
    sessions: SessionsDep,
    hsm: HsmDep,
    settings: SettingsDep,
) -> AuthorizationResponse:
    """Reserve an amount (fuel pump) until completion, reversal or expiry (PIN checked first)."""
    outcome = await service.authorize(
        sessions, session, signed, body, kind=MessageKind.preauth, hsm=hsm, settings=settings
    )
    return outcome.response()


@router.post("/completion", response_model=AuthorizationResponse)
async def completion(
    body: Annotated[CompletionRequest, signed_body(CompletionRequest)],
    terminal: AuthenticatedTerminal,
    session: SessionDep,
    settings: SettingsDep,
) -> AuthorizationResponse:
    outcome = await service.complete(session, terminal, body, settings=settings)
    return outcome.response()


@router.post("/reversal", response_model=AuthorizationResponse)
async def reversal(
    body: Annotated[ReversalRequest, signed_body(ReversalRequest)],
    terminal: AuthenticatedTerminal,
    session: SessionDep,
    settings: SettingsDep,
) -> AuthorizationResponse:
    outcome = await service.reverse(session, terminal, body, settings=settings)
    return outcome.response()


@router.post("/refund", response_model=AuthorizationResponse)
async def refund(
    body: Annotated[RefundRequest, signed_body(RefundRequest)],
    terminal: AuthenticatedTerminal,
    session: SessionDep,
    settings: SettingsDep,
) -> AuthorizationResponse:
    outcome = await service.refund(session, terminal, body, settings=settings)
    return outcome.response()
