"""Shapes of the bills routes (docs/bills.md). Amounts are integer fen."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from cardsvc.bills.models import BillerCategory, BillerStatus, SettlementCycle

BillerCode = Annotated[str, Field(pattern=r"^[A-Z0-9_]{2,16}$", description="the biller id")]
Text = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]
Endpoint = Annotated[
    str,
    Field(
        min_length=8,
        max_length=200,
        pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$",
        description="the biller's base URL; the protocol's paths are appended to it",
    ),
]
KeyLabel = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_.-]{1,40}$",
        description="the HSM label of the key shared with the biller (usage biller-mac)",
    ),
]
Pattern = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="the bill-key format (docs/bills.md §1), e.g. 31[0-9]{8}",
    ),
]
AccountNo = Annotated[str, Field(pattern=r"^[0-9]{8,34}$")]
Fen = Annotated[int, Field(strict=True, ge=0, le=10**8)]


class FeeRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fixed: Fen = Field(default=0, description="fen per payment")
    bps: int = Field(
        default=0, strict=True, ge=0, le=10_000, description="of the amount, in 1/10 000"
    )
    max: Fen = Field(default=0, description="at most this fee per payment (0: no cap)")


class BankDetails(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bank_name: Text
    account_no: AccountNo
    account_name: Text


class BillerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: BillerCode
    name: Text
    category: BillerCategory
    endpoint: Endpoint
    key_label: KeyLabel
    bill_key_pattern: Pattern
    bank: BankDetails
    fee: FeeRule = Field(default_factory=FeeRule)
    settlement_cycle: SettlementCycle = SettlementCycle.daily


class BillerChange(BaseModel):
    """Only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    name: Text | None = None
    endpoint: Endpoint | None = None
    key_label: KeyLabel | None = None
    bill_key_pattern: Pattern | None = None
    bank: BankDetails | None = None
    fee: FeeRule | None = None
    settlement_cycle: SettlementCycle | None = None


class BillerStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: BillerStatus


class BillerOut(BaseModel):
    code: str
    name: str
    category: BillerCategory
    endpoint: str
    key_label: str
    bill_key_pattern: str
    bank: BankDetails
    fee: FeeRule
    settlement_cycle: SettlementCycle
    status: BillerStatus
    created_at: datetime
    updated_at: datetime


class BillerPublic(BaseModel):
    """What a resident or a counter sees of a biller."""

    code: str
    name: str
    category: BillerCategory
    bill_key_pattern: str
