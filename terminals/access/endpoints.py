"""Terminal sign-in route (docs/terminal-protocol.md §4)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from cardsvc.api.limits import BodyLimit, GuardedRoute, body_limit, parse_json
from cardsvc.deps import CacheDep, HsmDep, SessionDep, SettingsDep
from terminals.access import service
from terminals.access.auth import request_target
from terminals.access.schemas import SignInRequest, SignInResponse

# A sign-in is six short fields (docs/terminal-protocol.md §4).
SIGN_IN_LIMIT = BodyLimit(max_bytes=2048, max_values=32)

router = APIRouter(prefix="/terminal", tags=["terminal access"], route_class=GuardedRoute)


@router.post("/sign-in", response_model=SignInResponse)
@body_limit(SIGN_IN_LIMIT)
async def sign_in(
    request: Request, session: SessionDep, hsm: HsmDep, cache: CacheDep, settings: SettingsDep
) -> SignInResponse:
    """Prove the TMK (X-Mac over the canonical request, session id empty, seq 0); get a session key."""
    parsed = await parse_json(request, SignInRequest)
    body = await request.body()
    return await service.sign_in(
        session,
        hsm,
        cache,
        settings,
        path=request_target(request),
        header_terminal_no=request.headers.get("x-terminal-no", ""),
        mac_hex=request.headers.get("x-mac"),
        body=body,
        request=parsed,
    )
