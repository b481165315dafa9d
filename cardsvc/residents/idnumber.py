"""Resident ID numbers (居民身份证号码, GB 11643-1999): structure and ISO 7064 MOD 11-2 check digit.

18 characters: 6-digit administrative region code, 8-digit birth date YYYYMMDD, 3-digit order
code (odd = male, even = female), and a check character computed over the first 17 digits with
weights 2^(17-i) mod 11; the remainder selects one of "10X98765432".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from cardsvc.errors import ValidationFailed

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_SHAPE = re.compile(r"^\d{17}[\dX]$")

# Province-level prefixes of GB/T 2260 (mainland 11..65, Taiwan 71, Hong Kong 81, Macao 82).
PROVINCE_PREFIXES = frozenset(
    {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46}
    | {50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82}
)


class InvalidResidentId(ValidationFailed):
    pass


@dataclass(frozen=True)
class ResidentIdInfo:
    number: str
    region: str
    birth_date: date
    sex: str  # "M" | "F"


def check_char(first17: str) -> str:
    """The GB 11643 check character of 17 digits (ISO 7064 MOD 11-2)."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def parse_resident_id(value: str, *, today: date) -> ResidentIdInfo:
    """Validate and decode an ID number; raises InvalidResidentId with the reason (never the ID).

    ``today`` is the local date: a birth date after it is refused."""
    number = value.strip().upper()
    if not _SHAPE.match(number):
        raise InvalidResidentId("a resident ID is 17 digits followed by a digit or X")
    if int(number[:2]) not in PROVINCE_PREFIXES:
        raise InvalidResidentId("the region code names no province")
    if number[2:6] == "0000":
        raise InvalidResidentId("the region code names no city or county")
    try:
        birth = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError as exc:
        raise InvalidResidentId("the birth date in the resident ID is not a real date") from exc
    if birth.year < 1900 or birth > today:
        raise InvalidResidentId("the birth date in the resident ID is out of range")
    if check_char(number[:17]) != number[17]:
        raise InvalidResidentId("the resident ID check digit is wrong")
    return ResidentIdInfo(number, number[:6], birth, "M" if int(number[16]) % 2 else "F")


def birth_date_of(number: str) -> date:
    """The birth date in an ID number that passed :func:`parse_resident_id` when registered."""
    return date(int(number[6:10]), int(number[10:12]), int(number[12:14]))


def mask_resident_id(number: str) -> str:
    """The first 3 and the last 4 characters: ``321***********1232``. The birth date and most of
    the region are hidden, so what a role sees (with the sex and the address it may also see)
    leaves millions of candidates; the clear ID is only ever revealed, and each reveal audited."""
    return f"{number[:3]}{'*' * 11}{number[14:]}" if len(number) == 18 else "*" * len(number)


def mask_name(name: str) -> str:
    if len(name) <= 1:
        return "*"
    return name[0] + "*" * (len(name) - 1)
