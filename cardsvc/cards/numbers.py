"""Card numbers (DESIGN §5): city code (4) + 11-digit sequence + Luhn check digit; the ASN is the
card number in BCD (8 bytes), written as 16 hex digits that read the same as the number."""

from __future__ import annotations

import re
from typing import Final

from cardsvc.errors import ValidationFailed

SEQUENCE_DIGITS = 11
_CARD_NO = re.compile(r"^\d{16}$")
# The form /openapi.json states (the ASCII digits a card number is written in).
CARD_NO_PATTERN: Final = "^[0-9]{16}$"


def luhn_check_digit(payload: str) -> str:
    """The Luhn (ISO/IEC 7812-1) digit that makes ``payload + digit`` valid."""
    total = 0
    # Double every second digit counted from the right of the payload (the check digit's left).
    for position, char in enumerate(reversed(payload)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isdigit() and len(number) > 1 and luhn_check_digit(number[:-1]) == number[-1]


def make_card_no(city_code: str, sequence: int) -> str:
    if not (city_code.isdigit() and len(city_code) == 4):
        raise ValueError("city code is 4 digits")
    if not 0 < sequence < 10**SEQUENCE_DIGITS:
        raise ValueError("card sequence exhausted or invalid")
    payload = f"{city_code}{sequence:0{SEQUENCE_DIGITS}d}"
    return payload + luhn_check_digit(payload)


def check_card_no(card_no: str) -> str:
    if not _CARD_NO.match(card_no) or not luhn_valid(card_no):
        raise ValidationFailed("a card number is 16 digits with a valid Luhn check digit")
    return card_no


def asn_of(card_no: str) -> str:
    """The ASN (hex of the BCD card number): the same 16 characters."""
    return check_card_no(card_no)


def asn_bytes(card_no: str) -> bytes:
    return bytes.fromhex(asn_of(card_no))


def mask_card_no(card_no: str) -> str:
    return f"{card_no[:4]}********{card_no[-4:]}" if len(card_no) == 16 else "*" * len(card_no)
