"""Personalization session routes (docs/counter-agent.md): the counter agent starts a session for
the card in its reader, relays each batch of APDUs and brings the responses back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from cardsvc.api.limits import GuardedRoute
from cardsvc.deps import HsmDep, SessionDep, SessionsDep, SettingsDep
from cardsvc.personalization import service
from cardsvc.personalization.schemas import SessionStart, StepIn, TurnOut
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.deps import require_roles

router = APIRouter(prefix="/personalization", tags=["personalization"], route_class=GuardedRoute)

# As the application routes: the operator at the reader, or a supervisor standing in.
COUNTER_ROLES = (Role.counter_operator, Role.supervisor)
SUPERVISOR_ROLES = (Role.supervisor,)

Counter = Annotated[StaffPrincipal, Depends(require_roles(*COUNTER_ROLES))]
Supervisor = Annotated[StaffPrincipal, Depends(require_roles(*SUPERVISOR_ROLES))]


def turn_out(turn: service.Turn) -> TurnOut:
    return TurnOut(
        session_id=turn.session_id,
        application_id=turn.application_id,
        card_no=turn.card_no,
        chip_serial=turn.chip_serial,
        state=turn.state,
        seq=turn.seq,
        commands=[apdu.hex().upper() for apdu in turn.commands],
        step=turn.step,
        steps=turn.steps,
        resumed=turn.resumed,
        detail=turn.detail,
        apdu_count=turn.apdu_count,
    )


@router.post(
    "/sessions",
    response_model=TurnOut,
    summary="Start or resume the personalization of the card in the reader (counter operator, supervisor)",
)
async def start(
    body: SessionStart, principal: Counter, session: SessionDep, settings: SettingsDep
) -> TurnOut:
    return turn_out(
        await service.start(
            session,
            settings,
            body.application_id,
            atr=bytes.fromhex(body.atr),
            reader=body.reader,
            actor=principal.username,
        )
    )


@router.post(
    "/sessions/{session_id}/steps",
    response_model=TurnOut,
    summary="The card's responses to a batch; the answer is the next batch (counter operator, supervisor)",
)
async def next_step(
    session_id: int,
    body: StepIn,
    principal: Counter,
    session: SessionDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    hsm: HsmDep,
) -> TurnOut:
    return turn_out(
        await service.step(
            sessions,
            session,
            hsm,
            settings,
            session_id,
            seq=body.seq,
            responses=[bytes.fromhex(r) for r in body.responses],
            actor=principal.username,
        )
    )


@router.post(
    "/sessions/{session_id}/abandon",
    response_model=TurnOut,
    summary="Give the session's chip up so that another blank card can be taken (supervisor)",
)
async def abandon(session_id: int, principal: Supervisor, session: SessionDep) -> TurnOut:
    return turn_out(await service.abandon(session, session_id, actor=principal.username))
