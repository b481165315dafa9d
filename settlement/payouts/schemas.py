"""Payee payloads (docs/payouts.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from settlement.payouts.models import Cycle, PayeeKind, PayoutStatus

ACCOUNT_NO = r"^[0-9A-Za-z]{6,34}$"
Text60 = Annotated[str, Field(min_length=1, max_length=60)]


class PayeeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cycle: Cycle = Cycle.daily
    cycle_day: Annotated[int, Field(ge=1, le=31)] | None = None
    bank_name: Text60 | None = None
    bank_branch: Text60 | None = None
    account_no: str | None = Field(default=None, pattern=ACCOUNT_NO)
    account_holder: str | None = Field(default=None, min_length=1, max_length=100)


class PayeeOut(BaseModel):
    merchant_no: str
    merchant_name: str
    cycle: Cycle
    cycle_day: int | None
    bank_name: str | None
    bank_branch: str | None
    account_no: str | None
    account_holder: str | None
    held: bool  # no bank details: its payouts are held


class PayoutOut(BaseModel):
    reference: str
    payee_kind: PayeeKind
    merchant_no: str  # a biller's code for payee kind biller
    merchant_name: str
    amount: int
    bank_name: str | None
    bank_branch: str | None
    account_no: str | None
    account_holder: str | None
    status: PayoutStatus
