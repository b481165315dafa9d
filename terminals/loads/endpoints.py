"""Purse-load routes: thin; every one is a signed terminal request (AuthenticatedTerminal)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from cardsvc.api.limits import GuardedRoute
from cardsvc.deps import HsmDep, SessionDep, SettingsDep
from terminals.access.auth import AuthenticatedTerminal
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
    body: LoadRequest,
    terminal: AuthenticatedTerminal,
    session: SessionDep,
    hsm: HsmDep,
    settings: SettingsDep,
) -> LoadResponse:
    """Authorize a load from the card's INITIALIZE FOR LOAD answer; answers MAC2 and the host time."""
    outcome = await service.authorize_load(session, terminal, body, hsm=hsm, settings=settings)
    return outcome.response()


@router.post("/confirm", response_model=LoadState)
async def confirm(
    body: ConfirmRequest, terminal: AuthenticatedTerminal, session: SessionDep, hsm: HsmDep
) -> LoadState:
    """Confirm a load with the TAC the card returned to CREDIT FOR LOAD."""
    return await service.confirm_load(session, terminal, body, hsm=hsm)


@router.post("/prove", response_model=LoadState)
async def prove(
    body: ProveRequest, _terminal: AuthenticatedTerminal, session: SessionDep, hsm: HsmDep
) -> LoadState:
    """Report a GET TRANSACTION PROVE answer (type 02) read from a card after a torn load."""
    return await service.prove_load(session, body, hsm=hsm)


@router.get("/transfer", response_model=TransferWaiting)
async def transfer(
    terminal: AuthenticatedTerminal,
    session: SessionDep,
    asn: str = Query(pattern=r"^[0-9A-Fa-f]{16}$"),
) -> TransferWaiting:
    """The replaced card's balance this card may still take by a ``transfer`` load."""
    return await service.transfer_waiting(session, terminal, asn)
