"""The HSM client (DESIGN §7, hsm_contract.md): what the rest of the system calls.

It never sees a key.

Two implementations of one :class:`HsmClient` interface:

- :class:`TcpHsmClient`: a pool of TCP connections to ``hsm-sim serve`` (or a real HSM behind the
  same protocol), many requests in flight per connection, per-request timeouts, and retries for
  idempotent commands only;
- :class:`LocalHsmClient`: the same command handlers in-process, with the development key set, for
  unit tests.

Both send the very same JSON requests, so one contract suite covers both
(``tests/hsm_sim/test_contract.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

from hsm_sim.errors import (
    BAD_FRAME,
    HsmError,
    HsmKeyError,
    HsmMacInvalid,
    HsmUnavailable,
    error_for,
)
from hsm_sim.protocol import (
    DEFAULT_MAX_MESSAGE,
    HEADER,
    NON_IDEMPOTENT,
    auth_response,
    encode_frame,
)

if TYPE_CHECKING:
    from hsm_sim.service import HsmService

__all__ = [
    "AuditHead",
    "CardKeyBlock",
    "HsmClient",
    "HsmError",
    "HsmKeyError",
    "HsmMacInvalid",
    "HsmUnavailable",
    "KeyInfo",
    "KeyRef",
    "LocalHsmClient",
    "TacVerifyResult",
    "TcpHsmClient",
    "TerminalSession",
    "connect_hsm",
]


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyInfo:
    label: str
    version: int
    usage: str
    algorithm: str
    state: str  # active | verify-only | retired
    kcv: str  # hex, upper case

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> KeyInfo:
        return cls(
            label=str(data["label"]),
            version=int(data["version"]),
            usage=str(data["usage"]),
            algorithm=str(data["algorithm"]),
            state=str(data["state"]),
            kcv=str(data["kcv"]).upper(),
        )


@dataclass(frozen=True, slots=True)
class CardKeyBlock:
    """One WRITE KEY body for personalization (DESIGN §6.2), encrypted under the card's KT."""

    key_id: int
    version: int
    algorithm: int
    block: bytes  # 24 bytes: 3DES-ECB(KT, pad(id ‖ version ‖ algorithm ‖ key16))
    kcv: bytes  # 3 bytes, of the clear card key


@dataclass(frozen=True, slots=True)
class TacVerifyResult:
    results: list[bool]
    errors: dict[int, str]


@dataclass(frozen=True, slots=True)
class TerminalSession:
    key_under_tmk: bytes  # 16 bytes, 3DES-ECB under the terminal's TMK
    key_under_lmk: bytes  # opaque blob for the host; pass it back in KeyRef.session(...)
    kcv: bytes  # 3 bytes


@dataclass(frozen=True, slots=True)
class AuditHead:
    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class KeyRef:
    """Which key a MAC command uses; built with one of the three constructors below."""

    kind: str  # terminal_master | session | label
    terminal_no: bytes | None = None
    blob: bytes | None = None
    name: str | None = None

    @classmethod
    def terminal_master(cls, terminal_no: bytes) -> KeyRef:
        return cls(kind="terminal_master", terminal_no=terminal_no)

    @classmethod
    def session(cls, key_under_lmk: bytes) -> KeyRef:
        return cls(kind="session", blob=key_under_lmk)

    @classmethod
    def label(cls, label: str) -> KeyRef:
        return cls(kind="label", name=label)

    def to_wire(self) -> dict[str, str]:
        if self.kind == "terminal_master" and self.terminal_no is not None:
            return {"kind": self.kind, "terminal_no": self.terminal_no.hex().upper()}
        if self.kind == "session" and self.blob is not None:
            return {"kind": self.kind, "blob": self.blob.hex().upper()}
        if self.kind == "label" and self.name is not None:
            return {"kind": self.kind, "label": self.name}
        raise ValueError(f"incomplete key reference {self!r}")


# --- the interface ---------------------------------------------------------------------------


class HsmClient(Protocol):
    async def ping(self) -> None: ...
    async def key_info(self, label: str, version: int | None = None) -> KeyInfo: ...
    async def key_generate(self, label: str, usage: str, algorithm: str = "3DES") -> KeyInfo: ...
    async def key_rotate(self, label: str) -> KeyInfo: ...
    async def card_keys_export(
        self, asn: bytes, chip_serial: bytes, key_version: int = 1
    ) -> list[CardKeyBlock]: ...
    async def perso_auth(self, chip_serial: bytes, challenge: bytes) -> bytes: ...
    async def perso_mac(self, chip_serial: bytes, challenge4: bytes, data: bytes) -> bytes: ...
    async def tac_verify(self, records: Sequence[Mapping[str, object]]) -> TacVerifyResult: ...
    async def load_authorize(
        self,
        *,
        asn: bytes,
        key_version: int,
        random: bytes,
        online_counter: int,
        balance_before: int,
        amount: int,
        tx_type: int,
        terminal_no: bytes,
        mac1: bytes,
        host_datetime: str,
    ) -> bytes: ...
    async def purchase_mac1(
        self,
        *,
        asn: bytes,
        key_version: int,
        random: bytes,
        offline_counter: int,
        terminal_serial: int,
        amount: int,
        tx_type: int,
        terminal_no: bytes,
        datetime14: str,
        auth_code: bytes = b"",
    ) -> bytes: ...
    async def terminal_session_open(self, terminal_no: bytes) -> TerminalSession: ...
    async def mac_generate(self, key: KeyRef, data: bytes) -> bytes: ...
    async def mac_verify(self, key: KeyRef, data: bytes, mac: bytes) -> bool: ...
    async def data_encrypt(self, label: str, plaintext: bytes) -> bytes: ...
    async def data_decrypt(self, label: str, ciphertext: bytes) -> bytes: ...
    async def data_index(self, label: str, value: bytes) -> bytes: ...
    async def audit_head(self) -> AuditHead: ...
    async def close(self) -> None: ...


def _hex(value: bytes) -> str:
    return value.hex().upper()


def _unhex(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise HsmError("INTERNAL", f"HSM answer lacks {what}")
    return bytes.fromhex(value)


def _wire_record(record: Mapping[str, object]) -> dict[str, object]:
    # Callers may hand bytes for the hex fields; the wire carries hex strings.
    return {
        k: (_hex(bytes(v)) if isinstance(v, bytes | bytearray) else v) for k, v in record.items()
    }


class _CommandClient:
    """Every contract method, written once on top of :meth:`_call` (one request, one answer)."""

    async def _call(
        self, cmd: str, fields: dict[str, Any], wait: float | None = None
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def ping(self) -> None:
        await self._call("PING", {})

    async def key_info(self, label: str, version: int | None = None) -> KeyInfo:
        fields: dict[str, Any] = {"label": label}
        if version is not None:
            fields["version"] = version
        return KeyInfo.from_wire(await self._call("KEY_INFO", fields))

    async def key_generate(self, label: str, usage: str, algorithm: str = "3DES") -> KeyInfo:
        answer = await self._call(
            "KEY_GENERATE", {"label": label, "usage": usage, "algorithm": algorithm}
        )
        return KeyInfo.from_wire(answer)

    async def key_import(
        self, label: str, usage: str, key: bytes, algorithm: str = "3DES"
    ) -> KeyInfo:
        """Clear key import; the HSM accepts it in development mode only."""
        answer = await self._call(
            "KEY_IMPORT", {"label": label, "usage": usage, "algorithm": algorithm, "key": _hex(key)}
        )
        return KeyInfo.from_wire(answer)

    async def key_rotate(self, label: str) -> KeyInfo:
        return KeyInfo.from_wire(await self._call("KEY_ROTATE", {"label": label}))

    async def card_keys_export(
        self, asn: bytes, chip_serial: bytes, key_version: int = 1
    ) -> list[CardKeyBlock]:
        answer = await self._call(
            "CARD_KEYS_EXPORT",
            {"asn": _hex(asn), "chip_serial": _hex(chip_serial), "key_version": key_version},
        )
        return [
            CardKeyBlock(
                key_id=int(b["key_id"]),
                version=int(b["version"]),
                algorithm=int(b["algorithm"]),
                block=bytes.fromhex(b["block"]),
                kcv=bytes.fromhex(b["kcv"]),
            )
            for b in answer["blocks"]
        ]

    async def perso_auth(self, chip_serial: bytes, challenge: bytes) -> bytes:
        answer = await self._call(
            "PERSO_AUTH", {"chip_serial": _hex(chip_serial), "challenge": _hex(challenge)}
        )
        return _unhex(answer.get("cryptogram"), "cryptogram")

    async def perso_mac(self, chip_serial: bytes, challenge4: bytes, data: bytes) -> bytes:
        answer = await self._call(
            "PERSO_MAC",
            {"chip_serial": _hex(chip_serial), "challenge4": _hex(challenge4), "data": _hex(data)},
        )
        return _unhex(answer.get("mac"), "mac")

    async def tac_verify(self, records: Sequence[Mapping[str, object]]) -> TacVerifyResult:
        wire = [_wire_record(r) for r in records]
        answer = await self._call(
            "TAC_VERIFY", {"records": wire}, wait=self._batch_timeout(len(wire))
        )
        errors = {int(k): str(v) for k, v in (answer.get("errors") or {}).items()}
        return TacVerifyResult(results=[bool(x) for x in answer["results"]], errors=errors)

    def _batch_timeout(self, n: int) -> float | None:
        return None

    async def load_authorize(
        self,
        *,
        asn: bytes,
        key_version: int,
        random: bytes,
        online_counter: int,
        balance_before: int,
        amount: int,
        tx_type: int,
        terminal_no: bytes,
        mac1: bytes,
        host_datetime: str,
    ) -> bytes:
        answer = await self._call(
            "LOAD_AUTHORIZE",
            {
                "asn": _hex(asn),
                "key_version": key_version,
                "random": _hex(random),
                "online_counter": online_counter,
                "balance_before": balance_before,
                "amount": amount,
                "tx_type": tx_type,
                "terminal_no": _hex(terminal_no),
                "mac1": _hex(mac1),
                "host_datetime": host_datetime,
            },
        )
        return _unhex(answer.get("mac2"), "mac2")

    async def purchase_mac1(
        self,
        *,
        asn: bytes,
        key_version: int,
        random: bytes,
        offline_counter: int,
        terminal_serial: int,
        amount: int,
        tx_type: int,
        terminal_no: bytes,
        datetime14: str,
        auth_code: bytes = b"",
    ) -> bytes:
        answer = await self._call(
            "PURCHASE_MAC1",
            {
                "asn": _hex(asn),
                "key_version": key_version,
                "random": _hex(random),
                "offline_counter": offline_counter,
                "terminal_serial": terminal_serial,
                "amount": amount,
                "tx_type": tx_type,
                "terminal_no": _hex(terminal_no),
                "datetime": datetime14,
                "auth_code": _hex(auth_code),
            },
        )
        return _unhex(answer.get("mac1"), "mac1")

    async def terminal_session_open(self, terminal_no: bytes) -> TerminalSession:
        answer = await self._call("TERMINAL_SESSION_OPEN", {"terminal_no": _hex(terminal_no)})
        return TerminalSession(
            key_under_tmk=_unhex(answer.get("key_under_tmk"), "key_under_tmk"),
            key_under_lmk=_unhex(answer.get("key_under_lmk"), "key_under_lmk"),
            kcv=_unhex(answer.get("kcv"), "kcv"),
        )

    async def mac_generate(self, key: KeyRef, data: bytes) -> bytes:
        answer = await self._call("MAC_GENERATE", {"key": key.to_wire(), "data": _hex(data)})
        return _unhex(answer.get("mac"), "mac")

    async def mac_verify(self, key: KeyRef, data: bytes, mac: bytes) -> bool:
        answer = await self._call(
            "MAC_VERIFY", {"key": key.to_wire(), "data": _hex(data), "mac": _hex(mac)}
        )
        return bool(answer["valid"])

    async def data_encrypt(self, label: str, plaintext: bytes) -> bytes:
        answer = await self._call("DATA_ENCRYPT", {"label": label, "plaintext": _hex(plaintext)})
        return _unhex(answer.get("ciphertext"), "ciphertext")

    async def data_decrypt(self, label: str, ciphertext: bytes) -> bytes:
        answer = await self._call("DATA_DECRYPT", {"label": label, "ciphertext": _hex(ciphertext)})
        return _unhex(answer.get("plaintext"), "plaintext")

    async def data_index(self, label: str, value: bytes) -> bytes:
        answer = await self._call("DATA_INDEX", {"label": label, "value": _hex(value)})
        return _unhex(answer.get("index"), "index")

    async def audit_head(self) -> AuditHead:
        answer = await self._call("AUDIT_HEAD", {})
        return AuditHead(seq=int(answer["seq"]), hash=str(answer["hash"]))

    async def close(self) -> None:
        return None


def _raise_for(answer: dict[str, Any]) -> dict[str, Any]:
    if answer.get("ok") is True:
        return answer
    error = answer.get("error") or {}
    raise error_for(str(error.get("code", "INTERNAL")), str(error.get("message", "")))


# --- in-process ------------------------------------------------------------------------------


class LocalHsmClient(_CommandClient):
    """The HSM command handlers in this process (unit tests); same requests, same answers."""

    def __init__(self, service: HsmService) -> None:
        self._service = service
        self._next_id = 0

    @classmethod
    def development(cls) -> LocalHsmClient:
        """A fresh in-memory HSM with the development key set (DESIGN §6.1)."""
        from hsm_sim.service import HsmService

        return cls(HsmService.in_memory_development())

    async def _call(
        self, cmd: str, fields: dict[str, Any], wait: float | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        # A JSON round trip keeps the in-process path honest about what the wire can carry.
        request = json.loads(json.dumps({"id": self._next_id, "cmd": cmd, **fields}))
        answer = await self._service.handle(request, peer="local")
        return _raise_for(answer)


# --- over TCP --------------------------------------------------------------------------------


class _Connection:
    """One TCP connection; requests are matched to answers by id, so many can be in flight."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_message: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._max_message = max_message
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self.closed = False
        self._task = asyncio.create_task(self._read_loop())

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def request(self, cmd: str, fields: dict[str, Any], wait: float) -> dict[str, Any]:
        if self.closed:
            raise HsmUnavailable("connection closed")
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._writer.write(encode_frame({"id": request_id, "cmd": cmd, **fields}))
            await self._writer.drain()
            return await asyncio.wait_for(future, wait)
        except TimeoutError as exc:
            raise HsmUnavailable(f"{cmd} timed out after {wait:g} s") from exc
        except (ConnectionError, OSError) as exc:
            self._fail(f"connection lost: {exc}")
            raise HsmUnavailable(f"connection lost: {exc}") from exc
        finally:
            self._pending.pop(request_id, None)

    async def _read_loop(self) -> None:
        reason = "connection closed by the HSM"
        try:
            while True:
                (length,) = HEADER.unpack(await self._reader.readexactly(HEADER.size))
                if length > self._max_message:
                    reason = f"answer of {length} bytes exceeds the limit"
                    break
                answer = json.loads(await self._reader.readexactly(length))
                answer_id = answer.get("id") if isinstance(answer, dict) else None
                future = self._pending.get(answer_id) if type(answer_id) is int else None
                if future is not None and not future.done():
                    future.set_result(answer)
                elif isinstance(answer, dict) and answer.get("id") is None and not answer.get("ok"):
                    # A connection-level error (a framing complaint) ends the connection.
                    reason = str((answer.get("error") or {}).get("message", BAD_FRAME))
                    break
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError) as exc:
            reason = f"connection lost: {exc!r}"
        finally:
            self._fail(reason)

    def _fail(self, reason: str) -> None:
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(HsmUnavailable(reason))
        self._pending.clear()
        self._writer.close()

    async def close(self) -> None:
        self.closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


class TcpHsmClient(_CommandClient):
    """A pooled client of ``hsm-sim serve``; connections open lazily and reopen after a failure."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        secret: str | None = None,
        timeout: float = 5.0,
        pool_size: int = 2,
        retries: int = 2,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        self.host = host
        self.port = port
        self._secret = secret
        self._timeout = timeout
        self._pool_size = max(1, pool_size)
        self._retries = max(0, retries)
        self._max_message = max_message
        self._connections: list[_Connection] = []
        self._lock = asyncio.Lock()

    def _batch_timeout(self, n: int) -> float | None:
        # A 10,000-record TAC batch takes about a second on a busy HSM; allow for queueing.
        return self._timeout + n / 1000

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host, self.port, limit=self._max_message + HEADER.size
                ),
                self._timeout,
            )
        except (TimeoutError, OSError) as exc:
            raise HsmUnavailable(
                f"cannot connect to hsm-sim at {self.host}:{self.port}: {exc!r}"
            ) from exc
        connection = _Connection(reader, writer, self._max_message)
        if self._secret is not None:
            try:
                hello = _raise_for(await connection.request("HELLO", {}, self._timeout))
                response = auth_response(self._secret, bytes.fromhex(str(hello["challenge"])))
                _raise_for(
                    await connection.request("AUTH", {"response": response.hex()}, self._timeout)
                )
            except BaseException:
                await connection.close()
                raise
        return connection

    async def _connection(self) -> _Connection:
        self._connections = [c for c in self._connections if not c.closed]
        idle = min(self._connections, key=lambda c: c.in_flight, default=None)
        if idle is not None and (idle.in_flight == 0 or len(self._connections) >= self._pool_size):
            return idle
        async with self._lock:
            self._connections = [c for c in self._connections if not c.closed]
            if len(self._connections) < self._pool_size:
                connection = await self._open()
                self._connections.append(connection)
                return connection
            return min(self._connections, key=lambda c: c.in_flight)

    async def _call(
        self, cmd: str, fields: dict[str, Any], wait: float | None = None
    ) -> dict[str, Any]:
        attempts = 1 if cmd in NON_IDEMPOTENT else 1 + self._retries
        for attempt in range(attempts):
            try:
                connection = await self._connection()
                answer = await connection.request(cmd, fields, wait or self._timeout)
            except HsmUnavailable:
                if attempt + 1 >= attempts:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            return _raise_for(answer)
        raise HsmUnavailable("unreachable")  # pragma: no cover - the loop returns or raises

    async def close(self) -> None:
        connections, self._connections = self._connections, []
        for connection in connections:
            await connection.close()


async def connect_hsm(
    url: str,
    *,
    secret: str | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 - per-request timeout of the client, part of the contract
    pool_size: int = 2,
) -> HsmClient:
    """``tcp://host:port[?secret=...]`` (a running hsm-sim) or ``local://dev`` (in-process).

    The TCP client checks the connection (and the credentials) with a PING before returning.
    """
    parts = urlsplit(url)
    if parts.scheme == "local":
        return LocalHsmClient.development()
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
        raise ValueError(f"HSM url must be tcp://host:port or local://dev, got {url!r}")
    query_secret = parse_qs(parts.query).get("secret")
    client = TcpHsmClient(
        parts.hostname,
        parts.port,
        secret=secret if secret is not None else (query_secret[0] if query_secret else None),
        timeout=timeout,
        pool_size=pool_size,
    )
    try:
        await client.ping()
    except BaseException:
        await client.close()
        raise
    return client
