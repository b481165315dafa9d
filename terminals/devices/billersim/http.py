"""A minimal HTTP/1.1 server on asyncio streams (keep-alive, Content-Length bodies only).

The simulator needs what a framework hides: answering after the client gave up, or closing the
connection with no answer at all after the request was processed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

MAX_HEAD = 16 * 1024
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: str


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Close the connection without writing anything (an answer lost after processing).
    drop: bool = False


Handler = Callable[[Request], Awaitable[Response]]


class Server:
    def __init__(self, handler: Handler, *, max_body: int) -> None:
        self.handler = handler
        self.max_body = max_body

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername", ("?",))[0])
        try:
            while True:
                request = await self._read(reader, peer)
                if request is None:
                    break
                if isinstance(request, Response):
                    await self._write(writer, request, close=True)
                    break
                response = await self.handler(request)
                if response.drop:
                    writer.transport.abort()
                    return
                close = request.headers.get("connection", "").lower() == "close"
                await self._write(writer, response, close=close)
                if close:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _read(self, reader: asyncio.StreamReader, peer: str) -> Request | Response | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        if len(head) > MAX_HEAD:
            return Response(413, b'{"error":"BodyTooLarge","detail":"head too large"}')
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            return Response(400, b'{"error":"BadRequest","detail":"bad request line"}')
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            return Response(400, b'{"error":"BadRequest","detail":"bad Content-Length"}')
        if length < 0 or length > self.max_body:
            return Response(413, b'{"error":"BodyTooLarge","detail":"body too large"}')
        body = await reader.readexactly(length) if length else b""
        return Request(method, target.split("?", 1)[0], headers, body, peer)

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, response: Response, *, close: bool) -> None:
        head = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Status')}"]
        headers = {"Content-Type": "application/json", **response.headers}
        headers["Content-Length"] = str(len(response.body))
        if close:
            headers["Connection"] = "close"
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
        await writer.drain()
