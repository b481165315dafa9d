"""How the service reaches the HSM: a running ``hsm-sim`` (or real HSM) over TCP, or, in
development, an ``hsm-sim`` child process started with the development key set.

The HSM client interface itself lives in ``hsm_sim.client``; the service never sees a key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from cardsvc.settings import Settings
from hsm_sim.client import HsmClient, connect_hsm

__all__ = ["HsmClient", "open_hsm"]


@asynccontextmanager
async def open_hsm(settings: Settings) -> AsyncIterator[HsmClient]:
    secret = settings.hsm_secret.get_secret_value() if settings.hsm_secret else None
    async with AsyncExitStack() as stack:
        url = settings.hsm_url
        if url == "spawn":
            if not settings.development:
                raise RuntimeError(
                    "spawning hsm-sim with development keys is refused outside development"
                )
            from hsm_sim.testing import hsm_process

            url = await stack.enter_async_context(hsm_process(settings.var_dir / "hsm"))
        client = await connect_hsm(url, secret=secret, timeout=settings.hsm_timeout_seconds)
        stack.push_async_callback(client.close)
        yield client
