"""The HTTP protocol the API serves with.

With ``--workers`` > 1, uvicorn hands each worker a socket rebuilt from a file descriptor whose
``proto`` is 0, so asyncio does not recognise it as TCP and skips its usual ``TCP_NODELAY``.
Nagle's algorithm then holds the response body until the client's delayed ACK (40 ms on Linux),
adding 40 ms to every request. Setting the option on each accepted connection restores the
single-worker latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class NoDelayHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
