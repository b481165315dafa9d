"""The one clock: every service, the ledger included, takes "now" from here.

``now()`` is the system time as an aware UTC datetime, unless a test or a simulation has set the
clock: then it is that moment, standing still until it is set again or advanced. Nothing else in
the code base reads the system time for a business decision (expiry of a hold, a waiting period,
the day an allowance belongs to, a record's age), so setting this clock moves all of them
together.

The clock is process-wide on purpose: a request runs through several domains (authentication,
the card check, the ledger) and each must see the same time, without a parameter threaded through
every call. Reading it costs one function call (the online authorization path reads it a few
times per request).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

_fixed: datetime | None = None


def now() -> datetime:
    """The current moment, aware, in UTC."""
    fixed = _fixed
    return datetime.now(UTC) if fixed is None else fixed


def set_time(moment: datetime) -> None:
    """Stop the clock at ``moment`` (aware) until it is set, advanced or reset."""
    global _fixed
    if moment.tzinfo is None:
        raise ValueError("the clock takes an aware datetime")
    _fixed = moment.astimezone(UTC)


def advance(delta: timedelta) -> datetime:
    """Move the clock forward by ``delta`` (from the current moment if it was running)."""
    set_time(now() + delta)
    return now()


def reset() -> None:
    """Back to the system time."""
    global _fixed
    _fixed = None


@contextmanager
def stopped_at(moment: datetime) -> Iterator[None]:
    """The clock stands at ``moment`` inside the block, and is back to the system time after."""
    set_time(moment)
    try:
        yield
    finally:
        reset()
