"""Online authorization messages (docs/terminal-protocol.md, "Online authorization and loads").

A decline is a normal answer (HTTP 200) carrying its ISO-style response code.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from terminals.access.schemas import Amount, Serial

Asn = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{16}$")]
PinBlock = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{16}$")]


class ResponseCode(StrEnum):
    """ISO 8583-style response codes (DESIGN §9)."""

    approved = "00"
    invalid_transaction = "12"  # the message does not fit the original's state
    unknown_card = "14"
    original_not_found = "25"  # completion/reversal/refund naming no approved original
    lost_card = "41"
    insufficient_funds = "51"
    incorrect_pin = "55"  # the PIN is wrong, missing, or the account has none
    expired_card = "54"
    not_permitted_to_terminal = "58"  # this kind of terminal may not ask for it (TerminalKind)
    exceeds_limit = "61"  # daily online limit, or the purse ceiling for a load
    restricted_card = "62"  # frozen, cancelled, replaced, not yet issued, blacklisted
    pin_tries_exceeded = "75"  # the account's PIN is locked until a counter resets it
    pin_unreadable = "81"  # the PIN block is not format 0 for this card under the session's key
    system_error = "96"  # the card's cryptogram did not verify, or the card state is stale


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    terminal_serial: Serial


class PurchaseRequest(_Message):
    """A purchase or a pre-authorization paid from the card holder's online account."""

    asn: Asn
    amount: Amount
    # The cardholder's PIN: an ISO 9564 format 0 block under the session's PIN key. Left out only
    # up to the merchant category's no-PIN limit. Not part of the message's identity: a retry of
    # the serial gets the first answer whatever block it carries.
    pin_block: PinBlock | None = None


class CompletionRequest(_Message):
    original_serial: Serial  # the pre-authorization's terminal serial
    amount: Amount  # at most the held amount; the rest of the hold is released


class ReversalRequest(_Message):
    original_serial: Serial  # the message the terminal got no answer for


class RefundRequest(_Message):
    original_serial: Serial  # an approved purchase or completion
    amount: Amount


class AuthorizationResponse(BaseModel):
    terminal_serial: int
    response_code: str
    approved: bool
    message: str
    authorization_id: int
    auth_code: str | None = None
    approved_amount: int = 0
    replayed: bool = False
