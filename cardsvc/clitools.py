"""What every command of the ``cardsvc`` command line shares."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine for a CLI command."""

    async def runner() -> T:
        return await make()

    return asyncio.run(runner())
