"""Purse-load messages (docs/terminal-protocol.md, "Online authorization and loads")."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from terminals.access.schemas import Amount, Balance, Byte, Counter16, Serial
from terminals.loads.models import LoadSource
from terminals.online.schemas import Asn

Hex4 = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{8}$")]


class LoadRequest(BaseModel):
    """The card's INITIALIZE FOR LOAD answer (reference/pboc.md §4) and what the load is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    terminal_serial: Serial
    terminal_no: Annotated[str, Field(pattern=r"^\d{12}$")]  # as sent to the card in INITIALIZE
    asn: Asn
    amount: Amount
    source: LoadSource
    balance: Balance  # balance before the load
    online_counter: Counter16  # before the load
    key_version: Byte
    algorithm: Byte = 0
    random: Hex4
    mac1: Hex4
    # A load from the online account carries the holder's PIN (docs/terminal-protocol.md §10):
    # an ISO 9564 format 0 block under the session's PIN key. Not part of the load's identity.
    pin_block: Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{16}$")] | None = None


class LoadResponse(BaseModel):
    load_id: int
    terminal_serial: int
    response_code: str
    approved: bool
    message: str
    status: str  # "pending" when approved (send CREDIT, then confirm), "declined" otherwise
    mac2: str | None = None  # for CREDIT FOR LOAD
    host_datetime: str | None = None  # YYYYMMDDhhmmss, local: CREDIT FOR LOAD's date and time
    replayed: bool = False


class ConfirmRequest(BaseModel):
    """The card's answer to CREDIT FOR LOAD."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    terminal_serial: Serial  # the load's serial
    tac: Hex4


class ProveRequest(BaseModel):
    """A GET TRANSACTION PROVE answer for a load (type 02), from any terminal the card meets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    asn: Asn
    # As sent in 805A: the counter after the load.
    online_counter: Annotated[int, Field(strict=True, ge=1, le=0xFFFF)]
    tac: Hex4


class TransferWaiting(BaseModel):
    """What a card may still take by a ``transfer`` load: its predecessor's balance."""

    asn: str
    amount: int  # fen


class LoadState(BaseModel):
    load_id: int | None
    status: str | None
    resolution: str | None = None
    tac_valid: bool
