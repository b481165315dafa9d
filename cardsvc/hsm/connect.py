"""Which adapter of the HSM port a process uses, chosen once from its settings.

``tcp://host:port``: a running ``hsm-sim`` (or a real HSM behind the same protocol). In
development only: ``spawn`` starts an ``hsm-sim`` child process and ``local://dev`` runs the
simulator in this process, both with the development key set (:mod:`cardsvc.hsm.development`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import urlsplit

from cardsvc.hsm import HsmClient
from cardsvc.hsm.sim import TcpHsmClient
from cardsvc.settings import Settings

__all__ = ["connect_hsm", "open_hsm"]


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
