"""Bank credit shapes (docs/bank-credits.md). Amounts are integer fen."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from cardsvc.bank.models import CreditSource, CreditStatus

BankReference = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9-]{1,35}$",
        description="the bank's own unique reference of the credit: the retry key",
    ),
]


class CreditIn(BaseModel):
    """One credit: the body of a notification, or one line of a credit file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bank_reference: BankReference
    account_reference: str = Field(
        min_length=1,
        max_length=40,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="what the payer wrote: an account reference, with spaces or hyphens or not",
    )
    amount: int = Field(strict=True, gt=0, le=10**10, description="integer fen")
    value_date: date
    currency: Literal["CNY"] = "CNY"
    payer_name: str = Field(default="", max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")


class CreditOut(BaseModel):
    """What the bank (and finance) sees of a credit; the account holder is never named."""

    id: int
    bank_code: str
    bank_reference: str
    source: CreditSource
    amount: int
    value_date: date
    status: CreditStatus = Field(description="posted, suspense or assigned")
    ledger_transaction_id: int | None
    clearing_date: date
    replayed: bool = False


class CreditDetail(CreditOut):
    """What finance sees: the reference the payer wrote, the account it went to, the break."""

    account_reference_given: str
    account_reference: str | None
    payer_masked: str
    break_id: int | None
    proposed_account_reference: str | None
    proposed_by: str | None
    assigned_by: str | None
    assign_transaction_id: int | None
    created_at: datetime
    resolved_at: datetime | None


class FileLineOut(BaseModel):
    line: int
    bank_reference: str
    status: Literal["posted", "suspense", "replayed", "conflict"]
    credit_id: int | None


class FileOut(BaseModel):
    bank_code: str
    lines: int
    posted: int
    suspense: int
    replayed: int
    conflicts: int
    amount_posted: int
    amount_suspense: int
    results: list[FileLineOut]


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_reference: str = Field(min_length=14, max_length=20)
