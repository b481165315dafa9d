"""Offline upload route (docs/terminal-protocol.md §7)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import ValidationError

from cardsvc.deps import HsmDep, SessionDep, SettingsDep
from cardsvc.errors import ValidationFailed
from terminals.access.auth import AuthenticatedTerminal
from terminals.lists import service as lists
from terminals.uploads import service
from terminals.uploads.schemas import UploadRequest, UploadResponse

router = APIRouter(prefix="/terminal", tags=["terminal uploads"])


@router.post("/uploads", response_model=UploadResponse)
async def upload(
    request: Request,
    terminal: AuthenticatedTerminal,
    session: SessionDep,
    hsm: HsmDep,
    settings: SettingsDep,
) -> UploadResponse:
    """One batch of offline records: a result code per record; one ledger posting per batch."""
    try:
        parsed = UploadRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise ValidationFailed.naming_fields("upload header", exc.errors()) from None
    # Same transaction either way; recorded first so that nothing runs between the ledger
    # posting (which locks the merchant's pending account) and the commit but the batch's
    # final update.
    await lists.report_versions(
        session, terminal.terminal_id, parsed.blacklist_version, parsed.params_version
    )
    return await service.ingest(session, hsm, settings, terminal, parsed)
