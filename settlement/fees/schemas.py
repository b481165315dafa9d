"""Fee rule payloads (docs/fees.md). Every integer is ranged to what its column holds and to what
a fee can sensibly be; amounts in fen, rates in 1/100000 of the amount (0.01 per mille)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from settlement.fees.models import RATE_UNITS
from terminals.registry.models import MerchantCategory

MAX_FEN = 100_000_000  # 1,000,000.00 yuan: above any fee of one record or one day
MAX_AMOUNT = 10**12  # a tier bound, in fen
MAX_TIERS = 10
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2099, 12, 31)

Fen = Annotated[int, Field(ge=0, le=MAX_FEN)]
Rate = Annotated[int, Field(ge=0, le=RATE_UNITS)]
Day = Annotated[date, Field(ge=FIRST_DAY, le=LAST_DAY)]
TX_CLASS = r"^[a-z][a-z0-9_]{0,31}$"


class TierIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_from: Annotated[int, Field(ge=0, le=MAX_AMOUNT)]
    rate: Rate


class TierOut(BaseModel):
    amount_from: int
    amount_to: int | None
    rate: int


class FeeRuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    merchant_no: str | None = Field(default=None, pattern=r"^\d{15}$")
    category: MerchantCategory | None = None
    tx_class: str | None = Field(default=None, pattern=TX_CLASS)
    effective_from: Day
    effective_to: Day | None = None
    per_record: Fen = 0
    rate: Rate = 0
    daily: Fen = 0
    min_fee: Fen | None = None
    max_fee: Fen | None = None
    tiers: list[TierIn] = Field(default_factory=list, max_length=MAX_TIERS)
    note: str = Field(default="", max_length=200)


class FeeRuleOut(BaseModel):
    id: int
    merchant_no: str | None
    category: MerchantCategory | None
    tx_class: str | None
    effective_from: date
    effective_to: date | None
    per_record: int
    rate: int
    daily: int
    min_fee: int | None
    max_fee: int | None
    tiers: list[TierOut]
    note: str
    created_by: str
    created_at: datetime
    retired_at: datetime | None
