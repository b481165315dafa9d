"""The adapter of the HSM port for ``hsm-sim`` (docs/hsm-protocol.md): every port command as one
JSON request, and :class:`TcpHsmClient`, a pool of TCP connections to ``hsm-sim serve`` (or a
real HSM behind the same protocol).

The pool keeps many requests in flight per connection, times each request out, and retries only
the idempotent commands. One contract suite covers this adapter and the in-process one of
:mod:`cardsvc.hsm.development`, which send the very same requests
(``tests/hsm_sim/test_contract.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cardsvc.hsm import (
    INTERNAL,
    AuditAnchor,
    AuditHead,
    AuditProof,
    AuditSeal,
    CardKeyBlock,
    HsmError,
    HsmUnavailable,
    KeyInfo,
    KeyRef,
    PinKeyRef,
    PinOffset,
    TacVerifyResult,
    TerminalSession,
    error_for,
)
from cardsvc.metrics import HSM_LATENCY
from hsm_sim.errors import BAD_FRAME
from hsm_sim.protocol import (
    DEFAULT_MAX_MESSAGE,
    HEADER,
    NON_IDEMPOTENT,
    auth_response,
    encode_frame,
)

__all__ = ["CommandClient", "TcpHsmClient", "raise_for"]


def _hex(value: bytes) -> str:
    return value.hex().upper()


def _unhex(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise HsmError(INTERNAL, f"HSM answer lacks {what}")
    return bytes.fromhex(value)


def _wire_record(record: Mapping[str, object]) -> dict[str, object]:
    # Callers may hand bytes for the hex fields; the wire carries hex strings.
    return {
        k: (_hex(bytes(v)) if isinstance(v, bytes | bytearray) else v) for k, v in record.items()
    }


class CommandClient:
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

    async def purse_lock_command(
        self, asn: bytes, key_version: int, action: str, challenge4: bytes
    ) -> bytes:
        answer = await self._call(
            "PURSE_LOCK_MAC",
            {
                "asn": _hex(asn),
                "key_version": key_version,
                "action": action,
                "challenge4": _hex(challenge4),
            },
        )
        return _unhex(answer.get("command"), "command")

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
            pin_key_under_tmk=_unhex(answer.get("pin_key_under_tmk"), "pin_key_under_tmk"),
            pin_key_under_lmk=_unhex(answer.get("pin_key_under_lmk"), "pin_key_under_lmk"),
            pin_kcv=_unhex(answer.get("pin_kcv"), "pin_kcv"),
        )

    async def mac_generate(self, key: KeyRef, data: bytes) -> bytes:
        answer = await self._call("MAC_GENERATE", {"key": key.to_wire(), "data": _hex(data)})
        return _unhex(answer.get("mac"), "mac")

    async def mac_verify(self, key: KeyRef, data: bytes, mac: bytes) -> bool:
        answer = await self._call(
            "MAC_VERIFY", {"key": key.to_wire(), "data": _hex(data), "mac": _hex(mac)}
        )
        return bool(answer["valid"])

    async def pin_verify(
        self,
        key: PinKeyRef,
        pin_block: bytes,
        *,
        pan: str,
        validation_data: str,
        stored: PinOffset,
    ) -> bool:
        answer = await self._call(
            "PIN_VERIFY",
            {
                "pin_key": key.to_wire(),
                "pin_block": _hex(pin_block),
                "pan": pan,
                "validation_data": validation_data,
                "offset": stored.offset,
                "pvk_version": stored.pvk_version,
            },
        )
        return bool(answer["valid"])

    async def pin_offset_generate(
        self,
        key: PinKeyRef,
        pin_block: bytes,
        *,
        pan: str,
        validation_data: str,
        min_length: int,
        max_length: int,
    ) -> PinOffset:
        answer = await self._call(
            "PIN_OFFSET_GENERATE",
            {
                "pin_key": key.to_wire(),
                "pin_block": _hex(pin_block),
                "pan": pan,
                "validation_data": validation_data,
                "min_length": min_length,
                "max_length": max_length,
            },
        )
        return PinOffset(offset=str(answer["offset"]), pvk_version=int(answer["pvk_version"]))

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

    async def audit_checkpoint(
        self, label: str, prev: AuditAnchor, digests: Sequence[bytes]
    ) -> AuditSeal:
        answer = await self._call(
            "AUDIT_CHECKPOINT",
            {**_chain_start(label, prev), "digests": [_hex(d) for d in digests]},
            wait=self._batch_timeout(len(digests)),
        )
        macs = answer.get("macs")
        if not isinstance(macs, list) or len(macs) != len(digests):
            raise HsmError(INTERNAL, "HSM answer lacks one MAC per entry")
        return AuditSeal([_unhex(m, "mac") for m in macs], bool(answer.get("replayed")))

    async def audit_verify(
        self, label: str, prev: AuditAnchor, entries: Sequence[tuple[bytes, bytes]]
    ) -> AuditProof:
        answer = await self._call(
            "AUDIT_VERIFY",
            {
                **_chain_start(label, prev),
                "entries": [{"digest": _hex(d), "mac": _hex(m)} for d, m in entries],
            },
            wait=self._batch_timeout(len(entries)),
        )
        anchor = answer.get("anchor") or {}
        return AuditProof(
            valid=int(answer["valid"]),
            anchor=AuditAnchor(int(anchor.get("seq", 0)), _unhex(anchor.get("mac"), "anchor")),
        )

    async def close(self) -> None:
        return None


def _chain_start(label: str, prev: AuditAnchor) -> dict[str, Any]:
    return {"label": label, "prev_seq": prev.seq, "prev_mac": _hex(prev.mac)}


def raise_for(answer: dict[str, Any]) -> dict[str, Any]:
    if answer.get("ok") is True:
        return answer
    error = answer.get("error") or {}
    raise error_for(str(error.get("code", "INTERNAL")), str(error.get("message", "")))


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


class TcpHsmClient(CommandClient):
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
        # A large TAC batch takes the HSM a while on its own; allow a millisecond per record.
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
                hello = raise_for(await connection.request("HELLO", {}, self._timeout))
                response = auth_response(self._secret, bytes.fromhex(str(hello["challenge"])))
                raise_for(
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
        started = time.perf_counter()
        for attempt in range(attempts):
            try:
                connection = await self._connection()
                answer = await connection.request(cmd, fields, wait or self._timeout)
            except HsmUnavailable:
                if attempt + 1 >= attempts:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            HSM_LATENCY.labels(cmd).observe(time.perf_counter() - started)
            return raise_for(answer)
        raise HsmUnavailable("unreachable")  # pragma: no cover - the loop returns or raises

    async def close(self) -> None:
        connections, self._connections = self._connections, []
        for connection in connections:
            await connection.close()
