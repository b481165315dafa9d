"""Application API shapes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from cardsvc.applications.models import ApplicationKind, ApplicationStatus
from cardsvc.cards.models import CardType


class ApplicationCreate(BaseModel):
    resident_id: int = Field(description="the resident's record id")
    card_type: CardType | None = Field(
        default=None, description="omitted: senior from the birth date, else standard"
    )


class RejectBody(BaseModel):
    reason: str = Field(min_length=1, max_length=255)


class ApplicationOut(BaseModel):
    id: int
    resident_id: int
    kind: ApplicationKind
    card_type: CardType
    status: ApplicationStatus
    submitted_by: str
    submitted_at: datetime
    decided_by: str | None
    reject_reason: str | None
    card_id: int | None
    card_no: str | None = None
    replaces_card_id: int | None
