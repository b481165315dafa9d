"""Bill-key patterns (户号 formats): a small, safe subset of regular expressions.

An administrator gives a biller's bill-key format as a sequence of atoms, each optionally
repeated a fixed number of times: a literal letter or digit, ``\\d``, or a class such as
``[0-9A-Z]``; a repeat is ``{n}`` or ``{n,m}``. No alternation, groups, ``*`` or ``+``: every
pattern is anchored, matches in linear time, and bounds the key's length (at most 32).
"""

from __future__ import annotations

import re
from functools import lru_cache

from cardsvc.errors import ValidationFailed

MAX_KEY_LENGTH = 32
_ATOM = re.compile(
    r"(\\d|\[(?:[0-9A-Za-z](?:-[0-9A-Za-z])?)+\]|[0-9A-Za-z])(?:\{(\d{1,2})(?:,(\d{1,2}))?\})?"
)


def check(pattern: str) -> tuple[int, int]:
    """The shortest and longest key the pattern admits, or ValidationFailed."""
    position, low, high = 0, 0, 0
    if not pattern:
        raise ValidationFailed("the bill-key pattern is empty")
    while position < len(pattern):
        found = _ATOM.match(pattern, position)
        if found is None:
            raise ValidationFailed(
                f"bill-key pattern: unexpected {pattern[position]!r} at {position + 1} "
                "(atoms are a letter or digit, \\d or [class], each with {n} or {n,m})"
            )
        n = int(found.group(2) or 1)
        m = int(found.group(3) or n)
        if found.group(3) is not None and not 0 < n <= m:
            raise ValidationFailed("bill-key pattern: a repeat {n,m} needs 0 < n <= m")
        if found.group(2) is not None and n == 0:
            raise ValidationFailed("bill-key pattern: a repeat must be at least 1")
        low, high, position = low + n, high + m, found.end()
    if high > MAX_KEY_LENGTH:
        raise ValidationFailed(f"bill-key pattern admits keys longer than {MAX_KEY_LENGTH}")
    return low, high


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    check(pattern)
    return re.compile(pattern, re.ASCII)


def matches(pattern: str, bill_key: str) -> bool:
    return len(bill_key) <= MAX_KEY_LENGTH and _compiled(pattern).fullmatch(bill_key) is not None
