"""Audit API shapes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class AuditEntryOut(BaseModel):
    seq: int | None = Field(description="the entry's number in the chain; null until sealed")
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before: str | None
    after: str | None
    mac: str | None = Field(
        description="the HSM's HMAC-SHA256 of the entry, chained (hex); null until sealed"
    )


class AuditVerifyOut(BaseModel):
    ok: bool
    entries: int = Field(description="sealed entries that proved out, from entry 1")
    head_mac: str = Field(description="the MAC of the last of them (hex; zeros when none)")
    anchored_seq: int = Field(description="the last entry the HSM anchored")
    pending: int = Field(description="entries written but not sealed yet")
    first_bad_seq: int | None
    problem: str | None
