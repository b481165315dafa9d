"""Registry payloads."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from terminals.registry.models import (
    MerchantCategory,
    MerchantStatus,
    TerminalKind,
    TerminalStatus,
)


class MerchantCreate(BaseModel):
    merchant_no: str = Field(pattern=r"^\d{15}$")
    name: str = Field(min_length=1, max_length=100)
    category: MerchantCategory
    settlement_account: str = Field(pattern=r"^[0-9A-Za-z]{6,34}$")


class MerchantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    merchant_no: str
    name: str
    category: MerchantCategory
    settlement_account: str
    status: MerchantStatus
    created_at: datetime


class TerminalCreate(BaseModel):
    terminal_no: str = Field(pattern=r"^\d{12}$")
    psam_no: str = Field(pattern=r"^[0-9A-F]{16}$")
    merchant_no: str = Field(pattern=r"^\d{15}$")
    # What it may ask of the host; only counters and kiosks load purses (see TerminalKind).
    kind: TerminalKind = TerminalKind.pos
    description: str = Field(default="", max_length=100)


class TerminalStatusChange(BaseModel):
    status: TerminalStatus


class TerminalKindChange(BaseModel):
    kind: TerminalKind


class TerminalOut(BaseModel):
    terminal_no: str
    psam_no: str
    merchant_no: str
    kind: TerminalKind
    status: TerminalStatus
    description: str
    blacklist_version: int
    params_version: int
    versions_reported_at: datetime | None
    last_sign_in_at: datetime | None
