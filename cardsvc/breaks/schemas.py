"""What opening, listing and resolving a break takes and gives (``cardsvc.breaks.service``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from cardsvc.breaks.models import BreakKind, BreakStatus

BIGINT_MAX = 2**63 - 1
Slug = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class BreakRef(BaseModel):
    """What a break is about. ``source`` names the kind of row that opened it (``offline_record``,
    ``purse_load``, ``bank_line``, ...) and ``source_id`` its id; the other fields are the keys
    people and jobs search by. Plain values: opening a break imports nothing of the opener."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Slug
    source_id: Annotated[int, Field(ge=1, le=BIGINT_MAX)] | None = None
    asn: Annotated[str, Field(pattern=r"^[0-9A-F]{16}$")] | None = None
    counter: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    terminal_no: Annotated[str, Field(pattern=r"^\d{12}$")] | None = None
    reference: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class NewBreak(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: BreakKind
    clearing_date: date
    reason: Annotated[str, Field(min_length=1, max_length=200)]
    ref: BreakRef
    amount: Annotated[int, Field(ge=0, le=BIGINT_MAX)] | None = None  # fen
    # Set by openers that may run twice (a job, a retried request): a second opening with the
    # same key opens nothing.
    open_key: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class Resolve(BaseModel):
    """How a break was closed: who (a staff user or ``system:<job>``), a short code for the way
    (``filled``, ``load_confirmed``, ``written_off``, ...), and what they wrote."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolver: Annotated[str, Field(min_length=1, max_length=64)]
    resolution: Slug
    note: Annotated[str, Field(max_length=500)] | None = None


class BreakView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: BreakKind
    status: BreakStatus
    amount: int | None
    clearing_date: date
    reason: str
    source: str
    source_id: int | None
    asn: str | None
    counter: int | None
    terminal_no: str | None
    reference: str | None
    created_at: datetime
    resolver: str | None
    resolution: str | None
    note: str | None
    resolved_at: datetime | None
