"""Terminal sign-in route (docs/terminal-protocol.md §4)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from cardsvc.api.limits import BodyLimit, GuardedRoute, body_limit, parse_json
from cardsvc.api.openapi import documents_body
from cardsvc.deps import HsmDep, SessionDep, SessionsDep, SettingsDep
from terminals.access import service
from terminals.access.auth import request_target
from terminals.access.schemas import SignInRequest, SignInResponse

# A sign-in is six short fields (docs/terminal-protocol.md §4).
SIGN_IN_LIMIT = BodyLimit(max_bytes=2048, max_values=32)

router = APIRouter(prefix="/terminal", tags=["terminal access"], route_class=GuardedRoute)


@router.post("/sign-in", response_model=SignInResponse)
@body_limit(SIGN_IN_LIMIT)
@documents_body(SignInRequest)
async def sign_in(
    request: Request, session: SessionDep, sessions: SessionsDep, hsm: HsmDep, settings: SettingsDep
) -> SignInResponse:
    """Prove the TMK (X-Mac over the canonical request, session id empty, seq 0); get a session key.

    The MAC is verified over the raw bytes before the body is parsed; ``terminal_time`` must lie
    within ``CARDSVC_TERMINAL_SIGN_IN_WINDOW_SECONDS`` of the host's clock, and a nonce is never
    accepted twice (docs/terminal-protocol.md §4)."""
    signer = await service.verify_sign_in(
        sessions,
        hsm,
        path=request_target(request),
        terminal_no=request.headers.get("x-terminal-no", ""),
        mac_hex=request.headers.get("x-mac"),
        body=await request.body(),
    )
    parsed = await parse_json(request, SignInRequest)
    return await service.open_session(session, hsm, settings, signer, parsed)
