"""Which adapter of the HSM port a process uses, chosen once from its settings.

``tcp://host:port``: a running ``hsm-sim`` (or a real HSM behind the same protocol). In
development only: ``spawn`` starts an ``hsm-sim`` child process and ``local://dev`` runs the
simulator in this process, both with the development key set (:mod:`cardsvc.hsm.development`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast
from urllib.parse import urlsplit

from cardsvc.hsm import HsmClient
from cardsvc.hsm.sim import TcpHsmClient
from cardsvc.settings import Settings

__all__ = ["connect_hsm", "open_hsm", "open_hsm_on_first_use"]


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
            from cardsvc.hsm.development import spawned_hsm

            url = await stack.enter_async_context(spawned_hsm(settings.var_dir / "hsm"))
        client = await connect_hsm(url, secret=secret, timeout=settings.hsm_timeout_seconds)
        stack.push_async_callback(client.close)
        yield client


class _OnFirstUse:
    """:func:`open_hsm`'s adapter, opened by the first command that asks the HSM something."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stack = AsyncExitStack()
        self._client: HsmClient | None = None
        self._opening = asyncio.Lock()

    async def _open(self) -> HsmClient:
        async with self._opening:
            if self._client is None:
                self._client = await self._stack.enter_async_context(open_hsm(self._settings))
            return self._client

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await getattr(await self._open(), name)(*args, **kwargs)

        return call

    async def close(self) -> None:
        await self._stack.aclose()


@asynccontextmanager
async def open_hsm_on_first_use(settings: Settings) -> AsyncIterator[HsmClient]:
    """Like :func:`open_hsm`, but nothing is started or connected until a command is sent: a
    command line that touches no key starts no HSM."""
    lazy = _OnFirstUse(settings)
    try:
        yield cast(HsmClient, lazy)
    finally:
        await lazy.close()


async def connect_hsm(
    url: str,
    *,
    secret: str | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 - per-request timeout of the client, part of the contract
    pool_size: int = 2,
) -> HsmClient:
    """``tcp://host:port`` (a running hsm-sim) or ``local://dev`` (in-process, development).

    The secret is an argument, never part of the URL. The TCP client checks the connection (and
    the credentials) with a PING before returning.
    """
    parts = urlsplit(url)
    if parts.scheme == "local":
        if parts.netloc != "dev":
            raise ValueError(f"the in-process HSM is local://dev, got {url!r}")
        from cardsvc.hsm.development import LocalHsmClient

        return LocalHsmClient.development()
    if (
        parts.scheme != "tcp"
        or not parts.hostname
        or parts.port is None
        or parts.query
        or parts.password
    ):
        # The URL is not echoed: a secret wrongly put into it must not reach a log.
        raise ValueError("HSM url must be tcp://host:port or local://dev, with no secret in it")
    client = TcpHsmClient(
        parts.hostname,
        parts.port,
        secret=secret,
        timeout=timeout,
        pool_size=pool_size,
    )
    try:
        await client.ping()
    except BaseException:
        await client.close()
        raise
    return client
