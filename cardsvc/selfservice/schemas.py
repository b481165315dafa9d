"""Self-service API shapes (docs/self-service.md). Amounts are integer fen."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from cardsvc.cards.models import CardStatus, CardType
from cardsvc.selfservice.auth import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

CardNo = Annotated[
    str, Field(pattern=r"^\d{16}$", description="16-digit card number (valid Luhn digit)")
]
Password = Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)]
NewPassword = Annotated[
    str,
    Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=MAX_PASSWORD_LENGTH,
        description="the password rules: docs/self-service.md §3",
    ),
]
ActivationCode = Annotated[
    str,
    Field(
        min_length=12,
        max_length=32,
        pattern=r"^[0-9A-Za-z \-]+$",
        description="as the counter showed it (XXXX-XXXX-XXXX); case, spaces and hyphens do not "
        "matter, O is read as 0 and I or L as 1",
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CardIn(_Body):
    card_no: CardNo


class CodeIssued(BaseModel):
    card_no: str
    activation_code: str = Field(description="shown once: hand it to the holder")
    expires_at: datetime
    reactivation: bool = Field(
        description="online access was activated before: the code sets a new password"
    )


class AccessOut(BaseModel):
    activated: bool
    activated_at: datetime | None
    last_login_at: datetime | None
    locked_until: datetime | None = Field(description="logins refused until then (null: not)")
    code_pending: bool = Field(description="a live activation code waits to be used")
    code_expires_at: datetime | None


class ActivateIn(_Body):
    card_no: CardNo
    activation_code: ActivationCode
    password: NewPassword


class LoginIn(_Body):
    card_no: CardNo
    password: Password


class PasswordChangeIn(_Body):
    old_password: Password
    new_password: NewPassword


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type name, not a secret
    expires_in: int = Field(description="seconds")


class ResidentAccountOut(BaseModel):
    reference: str = Field(description="14 digits: what a bank transfer to the account names")
    balance: int = Field(description="fen")
    held: int = Field(description="fen reserved by pending holds")
    available: int = Field(description="fen that may still be spent: balance - held")
    pin_set: bool
    pin_locked: bool = Field(description="too many wrong PINs: reset it at a counter")
    pin_tries_left: int


class ResidentCardOut(BaseModel):
    card_no: str = Field(description="masked: the first 4 and the last 4 digits")
    card_type: CardType
    status: CardStatus
    status_changed_at: datetime
    expires_on: date | None
    purse_balance: int = Field(description="fen on the chip, as last known to the host")
    balance_to_load: int = Field(description="fen from a replaced card, to load at a counter")
    blacklisted: bool


class CardsOut(BaseModel):
    cards: list[ResidentCardOut] = Field(description="newest first")


class LossOut(BaseModel):
    card: ResidentCardOut
    blacklist_version: int
    already_reported: bool = Field(description="the card was reported lost before: nothing moved")
    sessions_ended: bool = Field(description="every live token ended: log in again")
