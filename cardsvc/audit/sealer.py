"""The API process's sealer: seals new audit entries in the HSM, in batches, after they commit.

A request that wrote an entry wakes it when its transaction has committed; it seals
``GATHER_SECONDS`` later, with every entry committed meanwhile. It also looks every
``CARDSVC_AUDIT_SEAL_INTERVAL_SECONDS`` for entries another process wrote (a command, the
worker). Entries written while many requests commit are sealed together, one HSM command per
batch, so sealing costs the writers nothing and never serializes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc.audit import service
from cardsvc.hsm import HsmClient
from cardsvc.logging import get_logger

log = get_logger(__name__)


# After a wake-up, the sealer waits this long before it seals, so that the entries of the requests
# committing meanwhile go into the same batch: one HSM command and four short transactions for
# all of them instead of for each (an entry is unprotected for seconds at most either way).
GATHER_SECONDS = 0.2


class Sealer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        reads: async_sessionmaker[AsyncSession],
        hsm: HsmClient,
        interval: float,
        gather: float = GATHER_SECONDS,
    ) -> None:
        self._sessions = sessions
        self._reads = reads
        self._hsm = hsm
        self._interval = interval
        self._gather = gather
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """An entry was committed: seal soon."""
        self._wake.set()

    async def seal_once(self) -> None:
        try:
            if await service.has_unsealed(self._reads):
                sealed = await service.seal(self._sessions, self._hsm)
                log.debug("audit.sealed", entries=sealed)
        except Exception as exc:  # an outage or a refusal: logged, and tried again later
            log.warning("audit.seal_failed", error=type(exc).__name__, reason=str(exc)[:200])

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            if self._wake.is_set():
                await asyncio.sleep(self._gather)
            self._wake.clear()
            await self.seal_once()


@asynccontextmanager
async def running(
    sessions: async_sessionmaker[AsyncSession],
    reads: async_sessionmaker[AsyncSession],
    hsm: HsmClient,
    interval: float,
) -> AsyncIterator[Sealer]:
    """A sealer running for the block; what was committed before the block ends is sealed."""
    sealer = Sealer(sessions, reads, hsm, interval)
    task = asyncio.create_task(sealer.run(), name="audit-sealer")
    try:
        yield sealer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sealer.seal_once()
