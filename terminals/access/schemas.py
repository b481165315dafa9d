"""Sign-in payloads (docs/terminal-protocol.md §4)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class SignInRequest(BaseModel):
    terminal_no: str = Field(pattern=r"^\d{12}$")
    psam_no: str = Field(pattern=r"^[0-9A-F]{16}$")
    terminal_time: str = Field(pattern=r"^\d{14}$")  # the terminal's clock, local YYYYMMDDhhmmss
    nonce: str = Field(
        pattern=r"^[0-9A-F]{16}$"
    )  # 8 random bytes: a recorded sign-in cannot be replayed
    blacklist_version: int = Field(ge=0)
    params_version: int = Field(ge=0)


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
    server_time: str  # local YYYYMMDDhhmmss (Asia/Shanghai): the terminal sets its clock from it
    expires_at: datetime
    merchant_no: str
    merchant_category: str
    lists: ListVersions
