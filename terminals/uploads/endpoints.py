"""Offline upload route (docs/terminal-protocol.md §7)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from cardsvc.api.limits import BodyLimit, GuardedRoute, body_limit
from cardsvc.deps import HsmDep, SessionDep, SessionsDep, SettingsDep
from cardsvc.settings import Settings
from terminals.access.auth import VerifiedTerminal, verified_body
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
    signed: VerifiedTerminal,
    body: Annotated[UploadRequest, verified_body(UploadRequest)],
    session: SessionDep,
    sessions: SessionsDep,
    hsm: HsmDep,
    settings: SettingsDep,
) -> UploadResponse:
    """One batch of offline records: a result code per record; one ledger posting per batch."""
    return await service.ingest(sessions, session, hsm, settings, signed, body)
