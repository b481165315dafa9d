"""Shapes of the kiosk's bill routes (docs/bills.md §5). Amounts are integer fen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cardsvc.bills.schemas import BillerCode, BillKey, PaymentOut, Period, Reference
from terminals.access.schemas import Serial
from terminals.online.schemas import Asn, PinBlock


class KioskQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    biller: BillerCode
    bill_key: BillKey
    period: Period | None = None


class KioskPayment(BaseModel):
    """A bill paid from the card holder's online account: the card and its PIN, always."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    terminal_serial: Serial = Field(description="the kiosk's serial: one payment per serial")
    asn: Asn
    pin_block: PinBlock
    biller: BillerCode
    reference: Reference
    amount: int | None = Field(
        default=None, strict=True, ge=1, le=10**10, description="fen; without it the amount due"
    )


class KioskPaymentOut(BaseModel):
    terminal_serial: int
    response_code: str = Field(
        description="00 accepted (the payment follows), 14 41 54 62 card refused, 51 "
        "insufficient funds, 55 wrong or missing PIN, 58 not a kiosk, 75 PIN locked, 81 PIN "
        "block unreadable"
    )
    approved: bool
    message: str
    payment: PaymentOut | None = None


class KioskStatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    serial: str = Field(pattern=r"^B[0-9]{11}$")
