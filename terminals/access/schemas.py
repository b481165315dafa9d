"""Sign-in payloads (docs/terminal-protocol.md §4), and the integer types of every terminal message.

Every integer a terminal sends is a JSON integer in a documented range that fits its column
(docs/terminal-protocol.md §1): ``"1"``, ``1.0`` and ``true`` are refused, and so is a value out
of range (422 naming the field), before anything reaches the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

BIGINT_MAX = 2**63 - 1
U32_MAX = 0xFFFFFFFF

Serial = Annotated[int, Field(strict=True, ge=0, le=U32_MAX)]  # a terminal transaction serial
Amount = Annotated[int, Field(strict=True, ge=1, le=U32_MAX)]  # fen; the card's 4-byte amount
Balance = Annotated[int, Field(strict=True, ge=0, le=U32_MAX)]  # fen; a purse balance
Counter16 = Annotated[int, Field(strict=True, ge=0, le=0xFFFF)]  # a card's 2-byte counter
Byte = Annotated[int, Field(strict=True, ge=0, le=255)]
ListVersion = Annotated[int, Field(strict=True, ge=0, le=BIGINT_MAX)]


class SignInRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    terminal_no: str = Field(pattern=r"^\d{12}$")
    psam_no: str = Field(pattern=r"^[0-9A-F]{16}$")
    terminal_time: str = Field(pattern=r"^\d{14}$")  # the terminal's clock, local YYYYMMDDhhmmss
    nonce: str = Field(
        pattern=r"^[0-9A-F]{16}$"
    )  # 8 random bytes: a recorded sign-in cannot be replayed
    blacklist_version: ListVersion
    params_version: ListVersion


class ListVersions(BaseModel):
    blacklist: int
    parameters: int


class SignInResponse(BaseModel):
    session_id: str
    session_key: (
        str  # 16 bytes hex: the session MAC key 3DES-ECB encrypted under the terminal's TMK
    )
    key_kcv: str  # 3 bytes hex: check value of the clear session key
    # 16 bytes hex: the session's PIN key 3DES-ECB encrypted under the TMK; it encrypts the
    # format 0 PIN blocks of the PIN pad, and nothing else (a key of its own usage).
    pin_key: str
    pin_kcv: str  # 3 bytes hex: check value of the clear PIN key
    # Payments of this terminal's merchant category up to this amount (fen) need no PIN; 0: every
    # payment from the online account needs one.
    no_pin_limit: int
    seq: int  # the last sequence number used; the first signed request carries seq + 1
    server_time: str  # local YYYYMMDDhhmmss (settings.timezone): the terminal sets its clock
    expires_at: datetime
    merchant_no: str
    merchant_category: str
    lists: ListVersions
