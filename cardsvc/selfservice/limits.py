"""Rate limits of the channel's logins and activations (docs/self-service.md §5): failures per
card number and per client address, counted in the cache in fixed windows of
``CARDSVC_RESIDENT_FAILURE_WINDOW_SECONDS``.

A window is numbered from the clock (``cardsvc.clock``), so the answer's ``Retry-After`` is the
exact time left until the window that refused ends. Only failures count (an unknown card number
counts like a known one, so the limits tell nothing of which cards exist). The cache is never the
only guard (docs/architecture.md §11): while it is down these limits are skipped, logged, and the
database's lockout of each credential and void of each code still hold.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

from cardsvc import clock
from cardsvc.cache import CACHE_DOWN, Cache
from cardsvc.errors import RateLimited
from cardsvc.logging import get_logger
from cardsvc.selfservice.auth import rate_key
from cardsvc.settings import Settings

log = get_logger(__name__)


class TooManyAttempts(RateLimited):
    """Too many failed logins or activations for this card number or from this address within
    the window: retry after ``Retry-After`` seconds."""


@dataclass(frozen=True, slots=True)
class Subject:
    """What one attempt is counted against: its card number and its client address."""

    card_no: str
    address: str | None


def _window(settings: Settings) -> tuple[int, int]:
    """The current window's number and the seconds left in it (at least 1)."""
    width = settings.resident_failure_window_seconds
    now = clock.now().timestamp()
    number = int(now // width)
    return number, max(1, math.ceil((number + 1) * width - now))


def _keys(settings: Settings, subject: Subject, window: int) -> list[tuple[str, int]]:
    keys = [
        (
            f"resident-failures:{rate_key(settings, 'card', subject.card_no)}:{window}",
            settings.resident_max_failures_per_card,
        )
    ]
    if subject.address is not None:
        keys.append(
            (
                f"resident-failures:{rate_key(settings, 'address', subject.address)}:{window}",
                settings.resident_max_failures_per_address,
            )
        )
    return keys


async def check(cache: Cache, settings: Settings, subject: Subject) -> None:
    """TooManyAttempts when the card number or the address has used up its failures."""
    window, left = _window(settings)
    try:
        for key, limit in reversed(_keys(settings, subject, window)):  # the address first
            if int(await cache.get(key) or 0) >= limit:
                raise TooManyAttempts(
                    f"too many failed attempts: retry after {left} seconds", retry_after=left
                )
    except CACHE_DOWN:
        log.warning("selfservice.rate_limit_unavailable")


async def count_failure(cache: Cache, settings: Settings, subject: Subject) -> None:
    window, _ = _window(settings)
    ttl = settings.resident_failure_window_seconds + 1
    for key, _limit in _keys(settings, subject, window):
        with contextlib.suppress(*CACHE_DOWN):
            await cache.incr(key, ttl=ttl)
