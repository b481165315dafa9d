"""How the service reaches the HSM: a running ``hsm-sim`` (or real HSM) over TCP, or, in
development, an ``hsm-sim`` child process started with the development key set.

The HSM client interface itself lives in ``hsm_sim.client``; the service never sees a key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cardsvc.settings import Settings
from hsm_sim.client import HsmClient, connect_hsm

__all__ = ["HsmClient", "open_hsm"]


@asynccontextmanager
async def open_hsm(settings: Settings) -> AsyncIterator[HsmClient]:
    secret = settings.hsm_secret.get_secret_value() if settings.hsm_secret else None
    if settings.hsm_url == "spawn":
        if not settings.development:
            raise RuntimeError(
                "spawning hsm-sim with development keys is refused outside development"
            )
        from hsm_sim.testing import hsm_process

        async with hsm_process(settings.var_dir / "hsm") as url:
            client = await connect_hsm(url, secret=secret, timeout=settings.hsm_timeout_seconds)
            try:
                yield client
            finally:
                await client.close()
        return
    client = await connect_hsm(
        settings.hsm_url, secret=secret, timeout=settings.hsm_timeout_seconds
    )
    try:
        yield client
    finally:
        await client.close()
