"""A lean HTTP/1.1 keep-alive client for load generation.

The load generator shares this machine's two cores with the API, PostgreSQL, Redis and hsm-sim.
httpx spent 2–4 ms of CPU per request here, more than the work it measured competes for; this
client writes one pre-built request and reads one ``Content-Length`` response on a persistent
connection (uvicorn always sends one for these JSON answers), about 0.1 ms. One request at a time
per connection, as a terminal sends them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class RawConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, Any]:
        """Send one request; returns (status, decoded JSON body)."""
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        response_head = await self._reader.readuntil(b"\r\n\r\n")
        lines = response_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        content = await self._reader.readexactly(length) if length else b""
        return status, json.loads(content) if content else None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()
            self._writer = self._reader = None
