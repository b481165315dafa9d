"""What proposing and deciding a break's resolution takes and gives."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from settlement.resolutions.models import Action, ProposalStatus

BIGINT_MAX = 2**63 - 1


class NewProposal(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    # fen; required by every action but a re-examination, at most the break's amount
    amount: Annotated[int, Field(ge=1, le=BIGINT_MAX)] | None = None
    target: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    note: Annotated[str, Field(min_length=1, max_length=500)]


class ProposalView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    break_id: int
    action: Action
    amount: int | None
    target: str | None
    note: str
    status: ProposalStatus
    proposed_by_id: int
    proposed_by: str
    proposed_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    ledger_transaction_id: int | None


class Decision(BaseModel):
    """The outcome of one proposal of a batch: decided, or why not."""

    proposal_id: int
    ok: bool
    error: str | None = None
    detail: str | None = None
