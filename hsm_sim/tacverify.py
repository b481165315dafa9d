"""Batch TAC verification (DESIGN §7 TAC_VERIFY), written for speed.

Runs in the server process for small batches and in worker processes for large ones, so it
takes plain data: the records as decoded from JSON, and per TAC-master version the group-level
key ``div(MTK_v, group factor)``. Card TAC keys are cached briefly in memory (LRU with a TTL);
nothing here is ever written anywhere.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Final

from hsm_sim import pboc

MAX_RECORDS: Final = 10_000
_U32: Final = 0xFFFFFFFF


class TtlLru:
    """A small LRU cache whose entries also expire after ``ttl`` seconds."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._data: OrderedDict[tuple[int, bytes], tuple[float, bytes]] = OrderedDict()

    def get(self, key: tuple[int, bytes], now: float) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] < now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return item[1]

    def put(self, key: tuple[int, bytes], value: bytes, now: float) -> None:
        if self.size <= 0:
            return
        self._data[key] = (now + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class RecordError(ValueError):
    """A record field is missing or ill-formed; the record cannot be checked."""


def _hex(record: Mapping[str, Any], name: str, length: int) -> bytes:
    value = record.get(name)
    if not isinstance(value, str):
        raise RecordError(f"{name}: missing or not a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise RecordError(f"{name}: not hex") from None
    if len(raw) != length:
        raise RecordError(f"{name}: must be {length} bytes")
    return raw


def _int(record: Mapping[str, Any], name: str, maximum: int) -> int:
    value = record.get(name)
    if type(value) is not int or not 0 <= value <= maximum:
        raise RecordError(f"{name}: missing or not an integer in 0..{maximum}")
    return value


def _datetime(record: Mapping[str, Any]) -> bytes:
    value = record.get("datetime")
    if not isinstance(value, str) or len(value) != 14 or not value.isdigit() or not value.isascii():
        raise RecordError("datetime: must be YYYYMMDDhhmmss")
    return bytes.fromhex(value)


def tac_input(record: Mapping[str, Any]) -> tuple[int, bytes, bytes, bytes]:
    """(key_version, ASN, TAC, MAC input) of one record, or RecordError.

    Purchase: Amount(4) ‖ TxType(1) ‖ TermNo(6) ‖ TermTxSerial(4) ‖ Date ‖ Time (pboc.md §3.2).
    Load: BalanceAfter(4) ‖ OnlineCtr before increment(2) ‖ Amount(4) ‖ TxType(1) ‖ TermNo(6) ‖
    Date ‖ Time (pboc.md §4).
    """
    if not isinstance(record, Mapping):
        raise RecordError("record must be an object")
    kind = record.get("kind")
    asn = _hex(record, "asn", 8)
    key_version = _int(record, "key_version", 255)
    amount = _int(record, "amount", _U32)
    tx_type = _int(record, "tx_type", 255)
    terminal_no = _hex(record, "terminal_no", 6)
    dt = _datetime(record)
    tac = _hex(record, "tac", 4)
    if kind == "purchase":
        if tx_type not in (6, 9):
            raise RecordError("tx_type: a purchase is 6 (EP) or 9 (compound)")
        serial = _int(record, "terminal_serial", _U32)
        data = (
            amount.to_bytes(4, "big")
            + bytes((tx_type,))
            + terminal_no
            + serial.to_bytes(4, "big")
            + dt
        )
    elif kind == "load":
        if tx_type != 2:
            raise RecordError("tx_type: a load is 2 (EP)")
        balance_after = _int(record, "balance_after", _U32)
        counter = _int(record, "online_counter", 0xFFFF)
        data = (
            balance_after.to_bytes(4, "big")
            + counter.to_bytes(2, "big")
            + amount.to_bytes(4, "big")
            + bytes((tx_type,))
            + terminal_no
            + dt
        )
    else:
        raise RecordError("kind: must be 'purchase' or 'load'")
    return key_version, asn, tac, data


class TacVerifier:
    """Verifies records against TAC masters given as {version: div(MTK_v, group)}."""

    def __init__(self, cache: TtlLru) -> None:
        self.cache = cache
        self._diversifiers: dict[bytes, pboc.Diversifier] = {}

    def _diversifier(self, group_key: bytes) -> pboc.Diversifier:
        found = self._diversifiers.get(group_key)
        if found is None:
            if len(self._diversifiers) > 64:
                self._diversifiers.clear()
            found = self._diversifiers[group_key] = pboc.Diversifier(group_key)
        return found

    def verify(
        self, records: Sequence[Any], group_keys: Mapping[int, bytes], first_index: int = 0
    ) -> tuple[list[bool], dict[str, str]]:
        results: list[bool] = []
        errors: dict[str, str] = {}
        diversifiers = {v: self._diversifier(k) for v, k in group_keys.items()}
        cache = self.cache
        now = time.monotonic()
        for i, record in enumerate(records):
            try:
                key_version, asn, tac, data = tac_input(record)
                diversifier = diversifiers.get(key_version)
                if diversifier is None:
                    raise RecordError(
                        f"key_version: no usable TAC master key version {key_version}"
                    )
                cache_key = (key_version, asn)
                key = cache.get(cache_key, now)
                if key is None:
                    # DTK = div(div(MTK, group), ASN); TAC key = DTK_L ⊕ DTK_R (pboc.md §2.2)
                    key = pboc.tac_key(diversifier.derive(asn))
                    cache.put(cache_key, key, now)
                results.append(pboc.mac_equal(pboc.mac4(key, data), tac))
            except RecordError as exc:
                results.append(False)
                errors[str(first_index + i)] = str(exc)
        return results, errors


# One verifier per worker process, created on first use (its cache lives as long as the worker).
_worker_verifier: TacVerifier | None = None


def worker_init(cache_size: int, cache_ttl: float) -> None:
    global _worker_verifier
    _worker_verifier = TacVerifier(TtlLru(cache_size, cache_ttl))


def worker_verify(
    records: Sequence[Any], group_keys: Mapping[int, bytes], first_index: int
) -> tuple[list[bool], dict[str, str]]:
    """Entry point in a worker process (see ``HsmService``)."""
    if _worker_verifier is None:
        worker_init(100_000, 300.0)
    assert _worker_verifier is not None  # noqa: S101 - set just above
    return _worker_verifier.verify(records, group_keys, first_index)


def worker_ping() -> bool:
    return True
