"""Online account API shapes (docs/accounts.md). Amounts are integer fen."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from cardsvc.accounts.models import MovementKind, MovementStatus

CardNo = Annotated[str, Field(pattern=r"^\d{16}$", description="16-digit card number")]
TerminalNo = Annotated[
    str, Field(pattern=r"^\d{12}$", description="the counter PIN pad's terminal number")
]
PinBlock = Annotated[
    str,
    Field(
        pattern=r"^[0-9A-Fa-f]{16}$",
        description="ISO 9564 format 0 PIN block, 3DES-ECB under the PIN pad's session PIN key",
    ),
]
CounterCode = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_-]{1,16}$", description="the counter (its cash drawer)")
]
ReceiptNo = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9-]{1,32}$",
        description="the counter's receipt number: one movement per receipt (the retry key)",
    ),
]
Amount = Annotated[int, Field(strict=True, gt=0, le=10**10, description="integer fen")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountLookup(_Body):
    card_no: CardNo


class PinSet(_Body):
    """A PIN typed on a counter's PIN pad for the holder's card ``card_no``."""

    card_no: CardNo
    terminal_no: TerminalNo
    pin_block: PinBlock


class PinChange(PinSet):
    """The holder's own change of PIN at a counter: the old PIN and the new one, each typed on
    the PIN pad for card ``card_no`` (``pin_block`` is the new one)."""

    old_pin_block: PinBlock


class DepositIn(_Body):
    counter_code: CounterCode
    receipt_no: ReceiptNo
    amount: Amount


class WithdrawalIn(DepositIn):
    """A withdrawal, with the cardholder's PIN typed on the counter's PIN pad."""

    card_no: CardNo
    terminal_no: TerminalNo
    pin_block: PinBlock


class AccountOut(BaseModel):
    reference: str = Field(description="14 digits: city, account number, 2 check digits")
    resident_id: int
    balance: int = Field(description="fen")
    held: int = Field(description="fen reserved by pending holds")
    available: int = Field(description="fen that may still be spent: balance - held")
    pin_set: bool
    pin_locked: bool = Field(description="too many wrong PINs: reset it at a counter")
    pin_tries_left: int


class MovementOut(BaseModel):
    id: int
    kind: MovementKind
    account_reference: str
    counter_code: str
    receipt_no: str
    amount: int
    status: MovementStatus
    operator: str
    approver: str | None
    ledger_transaction_id: int | None
    clearing_date: date
    created_at: datetime
    decided_at: datetime | None
    replayed: bool = False


class StatementLineOut(BaseModel):
    line_id: int
    posted_at: datetime
    clearing_date: date
    tx_type: str
    amount: int = Field(description="fen; positive credits the account, negative debits it")
    balance_after: int
    description: str


class StatementOut(BaseModel):
    account_reference: str
    opening_balance: int | None = Field(
        description="the balance before the first line of this page (null: no line)"
    )
    lines: list[StatementLineOut]
    next_after: int | None = Field(description="pass as `after` for the next page; null: last")
