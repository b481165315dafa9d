"""Account references: how a resident's online account is named to a bank, a counter and the
resident (docs/accounts.md §1).

Fourteen digits: the city code (4), the account number (8, zero-padded) and two check digits of
ISO 7064 MOD 97-10 (as in an IBAN: the whole number modulo 97 is 1). MOD 97-10 catches every
single wrong digit and every swap of two neighbours, so a mistyped reference on a bank transfer
matches no account and goes to suspense instead of paying someone else. A payer may write it with
spaces or hyphens (``3211 0000 0017 98``); they are ignored.
"""

from __future__ import annotations

import re
from typing import Final

ACCOUNT_DIGITS: Final = 8
LENGTH: Final = 4 + ACCOUNT_DIGITS + 2
_SEPARATORS = re.compile(r"[\s\-]")


def check_digits(payload: str) -> str:
    """The two digits that make ``payload + digits`` ≡ 1 (mod 97)."""
    return f"{98 - int(payload + '00') % 97:02d}"


def make_reference(city_code: str, account_no: int) -> str:
    if not (city_code.isdigit() and len(city_code) == 4):
        raise ValueError("city code is 4 digits")
    if not 0 < account_no < 10**ACCOUNT_DIGITS:
        raise ValueError("account number exhausted or invalid")
    payload = f"{city_code}{account_no:0{ACCOUNT_DIGITS}d}"
    return payload + check_digits(payload)


def normalize(text: str) -> str | None:
    """The reference in ``text`` (separators removed) if it is well formed, else None."""
    compact = _SEPARATORS.sub("", text)
    if len(compact) != LENGTH or not compact.isascii() or not compact.isdigit():
        return None
    return compact if int(compact) % 97 == 1 else None
