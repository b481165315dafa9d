"""Purse-load routes: thin; every one is a signed terminal request (AuthenticatedTerminal)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cardsvc.api.limits import GuardedRoute
from cardsvc.deps import HsmDep, SessionDep, SessionsDep, SettingsDep
from terminals.access.auth import AuthenticatedTerminal, VerifiedTerminal, verified_body
from terminals.loads import service
from terminals.loads.schemas import (
    ConfirmRequest,
    LoadRequest,
    LoadResponse,
    LoadState,
    ProveRequest,
    TransferWaiting,
)

router = APIRouter(prefix="/loads", tags=["purse loads"], route_class=GuardedRoute)


@router.post("", response_model=LoadResponse)
async def authorize(
    signed: VerifiedTerminal,
    body: Annotated[LoadRequest, verified_body(LoadRequest)],
    session: SessionDep,
    sessions: SessionsDep,
    hsm: HsmDep,
    settings: SettingsDep,
) -> LoadResponse:
    """Authorize a load from the card's INITIALIZE FOR LOAD answer; answers MAC2 and the host time."""
    outcome = await service.authorize_load(
        sessions, session, signed, body, hsm=hsm, settings=settings
    )
    return outcome.response()


@router.post("/confirm", response_model=LoadState)
async def confirm(
    signed: VerifiedTerminal,
    body: Annotated[ConfirmRequest, verified_body(ConfirmRequest)],
    session: SessionDep,
    sessions: SessionsDep,
    hsm: HsmDep,
    settings: SettingsDep,
) -> LoadState:
    """Confirm a load with the TAC the card returned to CREDIT FOR LOAD."""
    return await service.confirm_load(sessions, session, signed, body, hsm=hsm, settings=settings)


@router.post("/prove", response_model=LoadState)
async def prove(
    signed: VerifiedTerminal,
    body: Annotated[ProveRequest, verified_body(ProveRequest)],
    session: SessionDep,
    sessions: SessionsDep,
    hsm: HsmDep,
    settings: SettingsDep,
) -> LoadState:
    """Report a GET TRANSACTION PROVE answer (type 02) read from a card after a torn load."""
    return await service.prove_load(sessions, session, signed, body, hsm=hsm, settings=settings)


@router.get("/transfer", response_model=TransferWaiting)
async def transfer(
    terminal: AuthenticatedTerminal,
    session: SessionDep,
    asn: str = Query(pattern=r"^[0-9A-Fa-f]{16}$"),
) -> TransferWaiting:
    """The replaced card's balance this card may still take by a ``transfer`` load."""
    return await service.transfer_waiting(session, terminal, asn)
