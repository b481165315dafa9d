"""Terminal sign-in route (docs/terminal-protocol.md §4)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import ValidationError

from cardsvc.deps import CacheDep, HsmDep, SessionDep, SettingsDep
from cardsvc.errors import ValidationFailed
from terminals.access import service
from terminals.access.auth import request_target
from terminals.access.schemas import SignInRequest, SignInResponse

router = APIRouter(prefix="/terminal", tags=["terminal access"])


@router.post("/sign-in", response_model=SignInResponse)
async def sign_in(
    request: Request, session: SessionDep, hsm: HsmDep, cache: CacheDep, settings: SettingsDep
) -> SignInResponse:
    """Prove the TMK (X-Mac over the canonical request, session id empty, seq 0); get a session key."""
    body = await request.body()
    try:
        parsed = SignInRequest.model_validate_json(body)
    except ValidationError as exc:
        raise ValidationFailed.naming_fields("sign-in request", exc.errors()) from None
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
