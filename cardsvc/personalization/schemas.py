"""Personalization session API shapes (docs/counter-agent.md). APDUs and responses are hex."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from cardsvc.personalization.service import TurnState

# A response: the card's data then its 2-byte status word (at most 256 data bytes).
Response = Annotated[str, Field(pattern=r"^(?:[0-9A-Fa-f]{2}){2,258}$")]
MAX_BATCH = 16


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionStart(_Body):
    application_id: int = Field(ge=1, le=2**63 - 1)
    atr: str = Field(
        pattern=r"^(?:[0-9A-Fa-f]{2}){8,33}$",
        description="the card's ATR, hex; its last 8 bytes are the chip serial",
    )
    reader: str = Field(
        default="agent", min_length=1, max_length=128, pattern=r"^[\x20-\x7E]+$",
        description="the reader's name, recorded with the session",
    )  # fmt: skip


class StepIn(_Body):
    seq: int = Field(ge=1, le=2**31 - 1, description="the number of the batch these answer")
    responses: list[Response] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="one per command sent, in order: data ‖ SW; stop at the first SW other than 9000",
    )


class TurnOut(BaseModel):
    session_id: int
    application_id: int
    card_no: str
    chip_serial: str
    state: TurnState
    seq: int = Field(description="the batch's number: bring its responses with it")
    commands: list[str] = Field(description="APDUs to send in order (hex); empty unless running")
    step: int = Field(description="plan steps the card has confirmed")
    steps: int = Field(description="plan steps in all")
    resumed: bool
    detail: str | None = Field(description="what happened and what to do next")
    apdu_count: int = Field(description="APDUs the card has answered in this session")
