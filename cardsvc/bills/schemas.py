"""Shapes of the bills routes (docs/bills.md). Amounts are integer fen."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from cardsvc.bills.models import (
    BillerCategory,
    BillerStatus,
    PaymentStatus,
    SettlementCycle,
    SubChannel,
)

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


# --- query and payments ---------------------------------------------------------------------

BillKey = Annotated[
    str,
    Field(
        pattern=r"^[0-9A-Za-z]{1,32}$",
        description="the customer number (户号), checked against the biller's pattern",
    ),
]
Period = Annotated[str, Field(pattern=r"^[0-9]{4}(0[1-9]|1[0-2])$", description="YYYYMM")]
Reference = Annotated[
    str, Field(pattern=r"^[0-9A-Za-z._-]{1,64}$", description="the presentment's reference")
]
PayAmount = Annotated[int, Field(strict=True, ge=1, le=10**10, description="integer fen")]
Serial = Annotated[str, Field(pattern=r"^B[0-9]{11}$", description="the payment's serial")]
CounterCode = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_-]{1,16}$", description="the counter (its cash drawer)")
]
ReceiptNo = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9-]{1,32}$",
        description="the counter's receipt number: one payment per receipt (the retry key)",
    ),
]


class QueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    biller: BillerCode
    bill_key: BillKey
    period: Period | None = Field(default=None, description="without it, the oldest unpaid bill")


class PresentmentOut(BaseModel):
    biller: str
    bill_key: str
    reference: str
    bill_id: str
    holder_masked: str
    amount_due: int
    late_fee: int
    period: str | None
    due_date: date | None
    partial_allowed: bool
    min_amount: int
    expires_at: datetime


class CounterPaymentIn(BaseModel):
    """Cash taken at a counter for a presentment."""

    model_config = ConfigDict(extra="forbid")

    biller: BillerCode
    reference: Reference
    amount: PayAmount | None = Field(
        default=None, description="fen; without it the amount due (required when partial)"
    )
    counter_code: CounterCode
    receipt_no: ReceiptNo


class CashReturnIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    counter_code: CounterCode


class PaymentOut(BaseModel):
    serial: str
    state: str = Field(description="pending, paid, failed, reversed, refunded or expired")
    status: PaymentStatus = Field(description="the state in detail (docs/bills.md §3.1)")
    sub_channel: SubChannel
    biller: str
    bill_key: str
    bill_id: str
    period: str | None
    amount: int
    receipt_no: str | None
    reason: str | None
    clearing_date: date
    paid_at: datetime
    decided_at: datetime | None
    counter_code: str | None
    receipt: str | None = Field(description="counter: the counter's receipt number")
    cash_returned_at: datetime | None
    replayed: bool = False


class CallbackIn(BaseModel):
    """A biller's callback (docs/biller-protocol.md §7)."""

    model_config = ConfigDict(extra="forbid")

    serial: Annotated[str, Field(pattern=r"^[0-9A-Za-z]{1,32}$")]
    result: Literal["success", "failure"]
    receipt_no: Annotated[str, Field(pattern=r"^[0-9A-Za-z._-]{1,64}$")] | None = None
    reason: Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")] | None = None
    detail: Annotated[str, Field(max_length=255)] | None = None


class CallbackAck(BaseModel):
    result: Literal["ack"] = "ack"


class ResidentPaymentIn(BaseModel):
    """A bill paid by the resident from the online account (self-service)."""

    model_config = ConfigDict(extra="forbid")

    biller: BillerCode
    reference: Reference
    amount: PayAmount | None = Field(default=None, description="fen; without it the amount due")
    idempotency_key: str = Field(
        pattern=r"^[A-Za-z0-9._:-]{1,64}$",
        description="the client's key of this submission: one payment per key and resident",
    )
