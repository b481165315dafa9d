"""Card API shapes."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from cardsvc.cards.models import CardStatus, CardType


class CardOut(BaseModel):
    id: int
    card_no: str
    asn: str
    resident_id: int
    card_type: CardType
    concession_code: str
    status: CardStatus
    chip_serial: str | None
    key_version: int
    issued_at: datetime | None
    expires_on: date | None
    replaced_by_id: int | None


class CardDetail(CardOut):
    """A card as the counter looks it up, with its balances in the books."""

    float_balance: int  # fen the chip holds, as far as the host has seen
    balance_to_load: int  # fen moved from the card it replaced, to load onto the chip (圈存)
    cash_to_pay_out: int  # fen of this cancelled card's cash refund a counter still owes the holder


class TransitionOut(BaseModel):
    card: CardOut
    blacklist_version: int | None = None
    replacement_application_id: int | None = None


class CancelBody(BaseModel):
    refund_to: str = Field(default="resident_account", pattern=r"^(resident_account|counter_cash)$")
    counter_code: str | None = Field(default=None, max_length=32)


class PurseLockBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(pattern=r"^(block|unblock)$")
    chip_serial: str = Field(
        pattern=r"^[0-9A-Fa-f]{16}$",
        description="the presented chip's serial (its ATR's last 8 bytes)",
    )
    challenge: str = Field(
        pattern=r"^[0-9A-Fa-f]{8}$", description="the card's answer to GET CHALLENGE 4 (0084000004)"
    )


class PurseLockOut(BaseModel):
    card_no: str
    action: str
    command: str = Field(description="the APDU to send (hex), its MAC made by the HSM under DAMK")


class CashPayoutBody(BaseModel):
    counter_code: str = Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_-]+$")


class CashPayoutOut(BaseModel):
    card_no: str
    amount: int  # fen handed to the holder
    counter_code: str
    paid_out_at: datetime
    ledger_transaction_id: int | None
    replayed: bool  # the same payout asked again: nothing moved this time
