"""Offline upload route (docs/terminal-protocol.md §7)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from cardsvc.api.limits import BodyLimit, GuardedRoute, body_limit, parse_json
from cardsvc.deps import HsmDep, SessionDep, SettingsDep
from cardsvc.settings import Settings
from terminals.access.auth import AuthenticatedTerminal
from terminals.lists import service as lists
from terminals.uploads import service
from terminals.uploads.schemas import UploadRequest, UploadResponse

# What one record may take at most, pretty-printed (docs/terminal-protocol.md §7), and the header.
UPLOAD_RECORD_BYTES = 1024
UPLOAD_RECORD_VALUES = 24
UPLOAD_HEADER_BYTES = 4096


def upload_limit(settings: Settings) -> BodyLimit:
    """The upload body limit follows the record limit (``CARDSVC_UPLOAD_MAX_RECORDS``)."""
    records = settings.upload_max_records
    return BodyLimit(
        max_bytes=UPLOAD_HEADER_BYTES + records * UPLOAD_RECORD_BYTES,
        max_values=64 + records * UPLOAD_RECORD_VALUES,
    )


router = APIRouter(prefix="/terminal", tags=["terminal uploads"], route_class=GuardedRoute)


@router.post("/uploads", response_model=UploadResponse)
@body_limit(upload_limit)
async def upload(
    request: Request,
    terminal: AuthenticatedTerminal,
    session: SessionDep,
    hsm: HsmDep,
    settings: SettingsDep,
) -> UploadResponse:
    """One batch of offline records: a result code per record; one ledger posting per batch."""
    parsed = await parse_json(request, UploadRequest)
    # Same transaction either way; recorded first so that nothing runs between the ledger
    # posting (which locks the merchant's pending account) and the commit but the batch's
    # final update.
    await lists.report_versions(
        session, terminal.terminal_id, parsed.blacklist_version, parsed.params_version
    )
    return await service.ingest(session, hsm, settings, terminal, parsed)
