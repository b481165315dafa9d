"""``hsm-sim serve``: the asyncio TCP server of DESIGN §7.

Framing: 4-byte big-endian length, then a UTF-8 JSON object. Many clients, many requests in
flight per connection (answers carry the request id and may come back out of order), a bound
on message size, and a clear error for every malformed input:

- a length over the bound → ``FRAME_TOO_LARGE``, then the connection is closed (the stream
  cannot be resynchronised);
- a frame that stalls mid-body → closed after ``frame_timeout_seconds``;
- a body that is not UTF-8 JSON → ``BAD_JSON`` (the framing is intact, the connection stays).

Clients authenticate with a shared-secret challenge (``HELLO`` → challenge, ``AUTH`` →
HMAC-SHA256(secret, context ‖ challenge)); in development mode loopback clients need not. Before
it, frames are small and the client has ``auth_timeout_seconds``; after it, a connection with
nothing to say for ``idle_timeout_seconds`` is closed. :class:`HsmServer` bounds the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import ipaddress
import json
import logging
import multiprocessing
import resource
import secrets
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from hsm_sim import errors as E
from hsm_sim.lock import StateLock
from hsm_sim.protocol import HEADER, auth_response, encode_frame
from hsm_sim.service import HsmService
from hsm_sim.settings import HsmSettings
from hsm_sim.tacverify import worker_init, worker_ping

log = logging.getLogger("hsm_sim.server")

MAX_AUTH_FAILURES = 3
DESCRIPTOR_RESERVE = 64  # beyond the client connections: files, pipes, the listening socket


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _error(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


class _Session:
    """One client connection: its authentication state and the answers it is owed."""

    def __init__(
        self, server: HsmServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.host = str(peer[0]) if isinstance(peer, tuple) else "unix"
        self.peer = f"{self.host}:{peer[1]}" if isinstance(peer, tuple) else "unix"
        settings = server.settings
        self.authenticated = settings.development and is_loopback(self.host)
        self.auth_deadline = asyncio.get_running_loop().time() + settings.auth_timeout_seconds
        self.challenge: bytes | None = None
        self.auth_failures = 0
        self.slots = asyncio.Semaphore(settings.max_in_flight_per_connection)
        self.write_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, answer: dict[str, Any]) -> None:
        async with self.write_lock:
            self.writer.write(encode_frame(answer))
            await self.writer.drain()

    async def _next_header(self) -> bytes | None:
        """The next frame's length prefix, or None when the connection should end: EOF, the
        authentication deadline passed, or (authenticated, nothing in flight) idle too long."""
        settings = self.server.settings
        while True:
            if self.authenticated:
                wait = settings.idle_timeout_seconds
            else:
                wait = self.auth_deadline - asyncio.get_running_loop().time()
                if wait <= 0:
                    return None
            try:
                return await asyncio.wait_for(self.reader.readexactly(HEADER.size), wait)
            except asyncio.IncompleteReadError:
                return None
            except TimeoutError:
                if self.authenticated and self.tasks:
                    continue  # answers still owed: not idle
                return None

    async def run(self) -> None:
        settings = self.server.settings
        try:
            while True:
                header = await self._next_header()
                if header is None:
                    return
                (length,) = HEADER.unpack(header)
                bound = (
                    settings.max_message_bytes
                    if self.authenticated
                    else settings.max_unauthenticated_frame_bytes
                )
                if length > bound:
                    await self.send(
                        _error(
                            None,
                            E.FRAME_TOO_LARGE,
                            f"frame of {length} bytes exceeds {bound}"
                            + ("" if self.authenticated else " before authentication"),
                        )
                    )
                    if self.authenticated:
                        self.server.service.record(
                            self.peer,
                            None,
                            None,
                            {"ok": False, "error": {"code": E.FRAME_TOO_LARGE}},
                            {},
                        )
                    return
                try:
                    body = await asyncio.wait_for(
                        self.reader.readexactly(length), settings.frame_timeout_seconds
                    )
                except (TimeoutError, asyncio.IncompleteReadError):
                    return  # half a frame: nothing to answer, the stream is unusable
                try:
                    request = json.loads(body.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    answer = _error(None, E.BAD_JSON, "frame body is not UTF-8 JSON")
                    self.server.service.record(self.peer, None, None, answer, {})
                    await self.send(answer)
                    continue
                if not await self._gate(request):
                    if self.auth_failures >= MAX_AUTH_FAILURES:
                        return
                    continue
                await self.slots.acquire()
                task = asyncio.create_task(self._answer(request))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        except (ConnectionError, OSError):
            return
        finally:
            for task in list(self.tasks):
                task.cancel()
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def _answer(self, request: Any) -> None:
        try:
            answer = await self.server.service.handle(request, self.peer)
            await self.send(answer)
        except (ConnectionError, OSError):
            pass
        finally:
            self.slots.release()

    async def _gate(self, request: Any) -> bool:
        """Handle HELLO/AUTH; True if the request may go on to the HSM commands."""
        cmd = request.get("cmd") if isinstance(request, dict) else None
        request_id = request.get("id") if isinstance(request, dict) else None
        service = self.server.service
        if cmd == "HELLO":
            self.challenge = secrets.token_bytes(16)
            answer: dict[str, Any] = {
                "id": request_id,
                "ok": True,
                "challenge": self.challenge.hex(),
                "auth_required": not self.authenticated,
            }
        elif cmd == "AUTH":
            answer = self._check_auth(request)
        elif not self.authenticated:
            answer = _error(request_id, E.AUTH_REQUIRED, "authenticate first: HELLO, then AUTH")
        else:
            return True
        service.record(
            self.peer, str(cmd), request_id if type(request_id) is int else None, answer, {}
        )
        await self.send(answer)
        return False

    def _check_auth(self, request: dict[str, Any]) -> dict[str, Any]:
        request_id = request.get("id")
        secret = self.server.settings.client_secret
        response = request.get("response")
        if self.challenge is None:
            return _error(request_id, E.AUTH_FAILED, "send HELLO first")
        challenge, self.challenge = self.challenge, None  # one try per challenge
        try:
            given = bytes.fromhex(response) if isinstance(response, str) else b""
        except ValueError:
            given = b""
        if secret is not None and hmac.compare_digest(
            given, auth_response(secret.get_secret_value(), challenge)
        ):
            self.authenticated = True
            self.server.authenticated(self)
            return {"id": request_id, "ok": True, "authenticated": True}
        self.auth_failures += 1
        return _error(request_id, E.AUTH_FAILED, "authentication failed")


class HsmServer:
    """The listener. Its bounds (docs/hsm-protocol.md, "Connections"): at most
    ``max_connections`` in all, ``max_connections_per_address`` from one address and
    ``max_unauthenticated_connections`` not yet authenticated (``max_unauthenticated_per_address``
    from one address, so one address cannot take them all); a connection over a bound is
    answered ``TOO_MANY_CONNECTIONS`` and closed at once, so a flood of idle or unauthenticated
    connections holds a bounded number of descriptors, and authenticated clients keep theirs."""

    def __init__(self, service: HsmService, settings: HsmSettings) -> None:
        self.service = service
        self.settings = settings
        self._server: asyncio.Server | None = None
        self._open: set[_Session] = set()
        self._unauthenticated: set[_Session] = set()
        self._per_address: Counter[str] = Counter()
        self._pending_from: Counter[str] = Counter()  # unauthenticated, by address
        self.refused = 0  # connections refused at a bound since start
        self._refusals_logged_at = 0.0

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(
            self._on_client,
            host,
            port,
            limit=self.settings.max_message_bytes + HEADER.size,
            backlog=1024,
        )
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    def _bound(self, session: _Session) -> str | None:
        settings = self.settings
        if len(self._open) >= settings.max_connections:
            return f"{settings.max_connections} connections open"
        if self._per_address[session.host] >= settings.max_connections_per_address:
            return f"{settings.max_connections_per_address} connections from {session.host}"
        if session.authenticated:
            return None
        if len(self._unauthenticated) >= settings.max_unauthenticated_connections:
            return f"{settings.max_unauthenticated_connections} connections not authenticated"
        if self._pending_from[session.host] >= settings.max_unauthenticated_per_address:
            return (
                f"{settings.max_unauthenticated_per_address} connections not authenticated "
                f"from {session.host}"
            )
        return None

    def authenticated(self, session: _Session) -> None:
        self._settle(session)

    def _settle(self, session: _Session) -> None:
        if session in self._unauthenticated:
            self._unauthenticated.discard(session)
            self._pending_from[session.host] -= 1
            if self._pending_from[session.host] <= 0:
                del self._pending_from[session.host]

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer)
        bound = self._bound(session)
        if bound is not None:
            self._refuse(session, bound)
            return
        self._open.add(session)
        self._per_address[session.host] += 1
        if not session.authenticated:
            self._unauthenticated.add(session)
            self._pending_from[session.host] += 1
        try:
            await session.run()
        finally:
            self._open.discard(session)
            self._settle(session)
            self._per_address[session.host] -= 1
            if self._per_address[session.host] <= 0:
                del self._per_address[session.host]

    def _refuse(self, session: _Session, bound: str) -> None:
        self.refused += 1
        with contextlib.suppress(Exception):
            session.writer.write(encode_frame(_error(None, E.TOO_MANY_CONNECTIONS, bound)))
        session.writer.close()
        now = asyncio.get_running_loop().time()
        if now - self._refusals_logged_at >= 10:  # a flood must not flood the log as well
            self._refusals_logged_at = now
            log.warning("refusing connections (%s); %d refused since start", bound, self.refused)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


def _descriptors_for(settings: HsmSettings) -> None:
    """Raise the process's descriptor limit to its hard limit, and refuse to start when even that
    cannot hold ``max_connections`` (plus the key store, the log, the workers' pipes)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    needed = settings.max_connections + DESCRIPTOR_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise ValueError(
            f"HSM_SIM_MAX_CONNECTIONS={settings.max_connections} needs {needed} file descriptors; "
            f"the limit is {soft} (raise it, or lower HSM_SIM_MAX_CONNECTIONS)"
        )


def make_executor(settings: HsmSettings) -> ProcessPoolExecutor | None:
    if settings.workers <= 0:
        return None
    return ProcessPoolExecutor(
        max_workers=settings.workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=worker_init,
        initargs=(settings.card_key_cache_size, settings.card_key_cache_ttl_seconds),
    )


async def serve(
    settings: HsmSettings,
    host: str,
    port: int,
    *,
    dev_keys: bool = False,
    ready_file: Path | None = None,
) -> None:
    """Run until cancelled (SIGINT/SIGTERM in the CLI)."""
    _descriptors_for(settings)
    # Before anything reads the files: a second simulator on them would fork the audit chain.
    state = StateLock([p for p in (settings.keystore, settings.audit_log) if p is not None])
    executor = make_executor(settings)
    try:
        service = HsmService.from_settings(settings, dev_keys=dev_keys, executor=executor)
        if executor is not None:
            loop = asyncio.get_running_loop()
            # Start the workers now, not on the first big batch.
            await asyncio.gather(
                *(loop.run_in_executor(executor, worker_ping) for _ in range(settings.workers))
            )
        server = HsmServer(service, settings)
        # The key store, modules and workers live as long as the process: frozen, they are not
        # walked by every full collection (a stall of every request in flight).
        gc.collect()
        gc.freeze()
        bound_host, bound_port = await server.start(host, port)
        log.info("hsm-sim listening on %s:%d (%s mode)", bound_host, bound_port, settings.mode)
        state.publish(bound_host, bound_port)
        if ready_file is not None:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(f"{bound_host} {bound_port}\n")
            tmp.replace(ready_file)
        try:
            await asyncio.Event().wait()
        finally:
            await server.close()
            service.audit.close()
    finally:
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        state.release()
