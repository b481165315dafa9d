"""The HSM commands (DESIGN §7, docs/hsm-protocol.md): a request object in, an answer object out.

The TCP server and the in-process client both call :meth:`HsmService.handle`, so validation,
key-usage rules and the audit trail are the same on both paths. Callers name keys and pass data;
no command ever returns a clear key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Final

from Crypto.Cipher import AES

from hsm_sim import errors as E
from hsm_sim import pboc
from hsm_sim import pin as pins
from hsm_sim.audit import CHAIN_GENESIS, Anchor, AuditLog, chain_mac, mask_asn
from hsm_sim.errors import HsmError, HsmKeyError
from hsm_sim.keystore import (
    ACTIVE,
    AES256,
    RETIRED,
    TDES,
    KeyStore,
    Lmk,
    StoredKey,
    seal,
    unseal,
)
from hsm_sim.settings import DEV_GROUP_FACTOR, HsmSettings, Mode, development_lmk_components
from hsm_sim.tacverify import MAX_RECORDS, TacVerifier, TtlLru, worker_verify

log = logging.getLogger("hsm_sim")

# Master-key labels (DESIGN §6.1) and the usage each must carry.
MPK, MLK, MTK, MAMK, MTRK, MTMK, MSSK = "MPK", "MLK", "MTK", "MAMK", "MTRK", "MTMK", "MSSK"
MASTER_USAGE: Final = {
    MPK: "purchase-master",
    MLK: "load-master",
    MTK: "tac-master",
    MAMK: "maintenance-master",
    MTRK: "transport-master",
    MTMK: "terminal-master",
    MSSK: "ss-master",
}

# Card key ids of our card OS (DESIGN §6.2) → the master they come from.
CARD_KEY_MASTERS: Final = ((0x01, MAMK), (0x02, MPK), (0x03, MLK), (0x04, MTK), (0x10, MSSK))
# DPUK (05) and DRPK (06) have no master of their own in DESIGN §6.1: they are one more level
# under DAMK with the key id as factor (documented in docs/hsm-protocol.md).
PIN_KEY_IDS: Final = (0x05, 0x06)
# APPLICATION BLOCK (P2 00 temporary, 01 permanent) and UNBLOCK, Lc counting the MAC (pboc.md §6.5).
PURSE_LOCK_HEADERS: Final = {
    "block": bytes.fromhex("841E000004"),
    "block_permanently": bytes.fromhex("841E000104"),
    "unblock": bytes.fromhex("8418000004"),
}

SESSION_BLOB_VERSION: Final = b"\x01"
SESSION_AAD: Final = b"hsm-sim terminal session key v1"
# A terminal's PIN key rests under its own LMK subkey and associated data: a PIN key blob never
# opens as a MAC key, nor a MAC key blob as a PIN key (a key has one usage).
PIN_BLOB_VERSION: Final = b"\x02"
PIN_AAD: Final = b"hsm-sim terminal PIN key v1"
PVK: Final = "PVK"
PVK_USAGE: Final = "pin-verification"
BANK_MAC_USAGE: Final = "bank-mac"
BILLER_MAC_USAGE: Final = "biller-mac"
HMAC_USAGES: Final = (BANK_MAC_USAGE, BILLER_MAC_USAGE)
FILE_MAC_USAGE: Final = "file-mac"
AUDIT_MAC_USAGE: Final = "audit-mac"
MAX_AUDIT_ENTRIES: Final = 10_000  # per AUDIT_CHECKPOINT or AUDIT_VERIFY
MAX_SEQ: Final = 2**63 - 1
PARALLEL_THRESHOLD: Final = 1_000  # records; smaller batches are verified in the server process
LABEL_RE: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,40}$")

GENERATE, VERIFY = "generate", "verify"


@dataclass
class Context:
    """One command in flight: its request and what goes into its audit entry."""

    request: Mapping[str, Any]
    peer: str
    audit: dict[str, Any] = field(default_factory=dict)

    # --- field readers: a missing or ill-typed field is BAD_REQUEST naming the field ----------

    def _get(self, name: str, optional: bool = False) -> Any:
        if name not in self.request:
            if optional:
                return None
            raise HsmError(E.BAD_REQUEST, f"missing field {name!r}")
        return self.request[name]

    def hex_field(
        self, name: str, length: int | None = None, *, max_length: int = 1 << 20
    ) -> bytes:
        value = self._get(name)
        if not isinstance(value, str):
            raise HsmError(E.BAD_REQUEST, f"field {name!r} must be a hex string")
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise HsmError(E.BAD_REQUEST, f"field {name!r} is not hex") from None
        if length is not None and len(raw) != length:
            raise HsmError(E.BAD_REQUEST, f"field {name!r} must be {length} bytes")
        if len(raw) > max_length:
            raise HsmError(E.BAD_REQUEST, f"field {name!r} is longer than {max_length} bytes")
        return raw

    def int_field(
        self, name: str, maximum: int, *, optional: bool = False, default: int = 0
    ) -> int:
        value = self._get(name, optional)
        if value is None and optional:
            return default
        if type(value) is not int or not 0 <= value <= maximum:
            raise HsmError(E.BAD_REQUEST, f"field {name!r} must be an integer in 0..{maximum}")
        return value

    def str_field(self, name: str, *, optional: bool = False) -> str | None:
        value = self._get(name, optional)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise HsmError(E.BAD_REQUEST, f"field {name!r} must be a string")
        return value

    def label(self, name: str = "label") -> str:
        value = self.str_field(name)
        assert value is not None  # noqa: S101 - not optional
        if not LABEL_RE.match(value):
            raise HsmError(E.BAD_REQUEST, f"field {name!r} must match {LABEL_RE.pattern}")
        return value

    def datetime14(self, name: str) -> str:
        value = self.str_field(name)
        if value is None or len(value) != 14 or not value.isdigit() or not value.isascii():
            raise HsmError(E.BAD_REQUEST, f"field {name!r} must be YYYYMMDDhhmmss")
        return value

    def asn(self) -> bytes:
        asn = self.hex_field("asn", 8)
        self.audit["asn"] = mask_asn(asn.hex().upper())
        return asn

    def uses(self, stored: StoredKey) -> None:
        self.audit.setdefault("keys", []).append(f"{stored.label}:v{stored.version}:{stored.kcv}")


Handler = Callable[[Context], Awaitable[dict[str, Any]] | dict[str, Any]]


class HsmService:
    def __init__(
        self,
        store: KeyStore,
        audit: AuditLog,
        lmk: Lmk,
        *,
        group_factor: bytes,
        development: bool,
        executor: Executor | None = None,
        workers: int = 0,
        cache_size: int = 200_000,
        cache_ttl: float = 300.0,
    ) -> None:
        if len(group_factor) != 8:
            raise ValueError("group factor must be 8 bytes")
        self.store = store
        self.audit = audit
        self.development = development
        self._group = group_factor
        self._session_key = lmk.subkey("terminal session keys")
        self._pin_blob_key = lmk.subkey("terminal PIN keys")
        self._executor = executor
        self._workers = max(1, workers)
        self._card_keys = TtlLru(cache_size, cache_ttl)
        self._group_keys: dict[tuple[str, int], bytes] = {}
        self._tac = TacVerifier(TtlLru(cache_size, cache_ttl))
        self._handlers: dict[str, Handler] = {
            "PING": self._ping,
            "KEY_GENERATE": self._key_generate,
            "KEY_IMPORT": self._key_import,
            "KEY_INFO": self._key_info,
            "KEY_LIST": self._key_list,
            "KEY_ROTATE": self._key_rotate,
            "CARD_KEYS_EXPORT": self._card_keys_export,
            "PERSO_AUTH": self._perso_auth,
            "PERSO_MAC": self._perso_mac,
            "PURSE_LOCK_MAC": self._purse_lock_mac,
            "TAC_VERIFY": self._tac_verify,
            "LOAD_AUTHORIZE": self._load_authorize,
            "PURCHASE_MAC1": self._purchase_mac1,
            "TERMINAL_SESSION_OPEN": self._terminal_session_open,
            "MAC_GENERATE": self._mac_generate,
            "MAC_VERIFY": self._mac_verify,
            "PIN_VERIFY": self._pin_verify,
            "PIN_OFFSET_GENERATE": self._pin_offset_generate,
            "DATA_ENCRYPT": self._data_encrypt,
            "DATA_DECRYPT": self._data_decrypt,
            "DATA_INDEX": self._data_index,
            "AUDIT_HEAD": self._audit_head,
            "AUDIT_CHECKPOINT": self._audit_checkpoint,
            "AUDIT_VERIFY": self._audit_verify,
        }

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    @classmethod
    def from_settings(
        cls, settings: HsmSettings, *, dev_keys: bool = False, executor: Executor | None = None
    ) -> HsmService:
        if dev_keys and settings.mode is not Mode.development:
            raise HsmError(
                E.FORBIDDEN, "the development key set is refused outside development mode"
            )
        lmk = Lmk(settings.lmk_component_list())
        store = KeyStore(lmk, settings.keystore)
        if dev_keys:
            store.load_development_keys()
        return cls(
            store,
            AuditLog(settings.audit_log),
            lmk,
            group_factor=settings.group_factor_bytes(),
            development=settings.development,
            executor=executor,
            workers=settings.workers,
            cache_size=settings.card_key_cache_size,
            cache_ttl=settings.card_key_cache_ttl_seconds,
        )

    @classmethod
    def in_memory_development(cls) -> HsmService:
        """Development keys, development LMK, no files: the backend of ``LocalHsmClient``."""
        lmk = Lmk(development_lmk_components())
        store = KeyStore(lmk)
        store.load_development_keys()
        return cls(
            store, AuditLog(), lmk, group_factor=bytes.fromhex(DEV_GROUP_FACTOR), development=True
        )

    # --- dispatch -----------------------------------------------------------------------------

    async def handle(self, request: Any, peer: str) -> dict[str, Any]:
        """One request object → one answer object; never raises."""
        request_id = request.get("id") if isinstance(request, dict) else None
        if type(request_id) is not int:
            request_id = None
        cmd = request.get("cmd") if isinstance(request, dict) else None
        ctx = Context(request if isinstance(request, dict) else {}, peer)
        try:
            if not isinstance(request, dict):
                raise HsmError(E.BAD_REQUEST, "a request is a JSON object")
            if request_id is None:
                raise HsmError(E.BAD_REQUEST, "field 'id' must be an integer")
            if not isinstance(cmd, str):
                raise HsmError(E.BAD_REQUEST, "field 'cmd' must be a string")
            handler = self._handlers.get(cmd)
            if handler is None:
                raise HsmError(E.UNKNOWN_COMMAND, f"unknown command {cmd[:40]!r}")
            result = handler(ctx)
            body = await result if not isinstance(result, dict) else result
            answer: dict[str, Any] = {"id": request_id, "ok": True, **body}
        except HsmError as exc:
            answer = {
                "id": request_id,
                "ok": False,
                "error": {"code": exc.code, "message": exc.message},
            }
        except Exception:  # one bad request must not take the HSM down
            log.exception("internal error in %s", cmd)
            answer = {
                "id": request_id,
                "ok": False,
                "error": {"code": E.INTERNAL, "message": "internal error"},
            }
        self.record(peer, cmd if isinstance(cmd, str) else None, request_id, answer, ctx.audit)
        return answer

    def record(
        self,
        peer: str,
        cmd: str | None,
        request_id: int | None,
        answer: Mapping[str, Any],
        details: Mapping[str, Any],
    ) -> None:
        entry: dict[str, Any] = {
            "peer": peer,
            "cmd": (cmd or "")[:40],
            "id": request_id,
            "ok": bool(answer["ok"]),
        }
        if not answer["ok"]:
            entry["code"] = answer["error"]["code"]
        entry.update(details)
        self.audit.append(entry)

    # --- keys ---------------------------------------------------------------------------------

    def _key(
        self, ctx: Context, label: str, usage: str, purpose: str, version: int | None = None
    ) -> StoredKey:
        """A stored key for one use: its usage must match, and generating needs an active key."""
        stored = self.store.get(label, version)
        if stored.usage != usage:
            raise HsmKeyError(E.KEY_USAGE, f"key {label} has usage {stored.usage}, not {usage}")
        if stored.state == RETIRED or (purpose == GENERATE and stored.state != ACTIVE):
            raise HsmKeyError(
                E.KEY_STATE, f"key {label} v{stored.version} is {stored.state}; cannot {purpose}"
            )
        ctx.uses(stored)
        return stored

    def _group_key(self, stored: StoredKey) -> bytes:
        """First diversification level, ``div(M, group factor)``: the same for every card."""
        ident = (stored.label, stored.version)
        found = self._group_keys.get(ident)
        if found is None:
            found = self._group_keys[ident] = pboc.diversify(
                self.store.material(stored), self._group
            )
        return found

    def _card_key(
        self, ctx: Context, master: str, key_version: int, asn: bytes, purpose: str
    ) -> bytes:
        """DxK = div(div(MxK_v, group), ASN) (DESIGN §6), cached briefly in memory."""
        stored = self._key(ctx, master, MASTER_USAGE[master], purpose, key_version)
        cache_key = (hash((stored.label, stored.version, stored.kcv)), asn)
        now = time.monotonic()
        found = self._card_keys.get(cache_key, now)
        if found is None:
            found = pboc.diversify(self._group_key(stored), asn)
            self._card_keys.put(cache_key, found, now)
        return found

    def _transport_key(self, ctx: Context, chip_serial: bytes) -> bytes:
        """KT = div(MTRK, chip serial), one level (DESIGN §6.2)."""
        stored = self._key(ctx, MTRK, MASTER_USAGE[MTRK], GENERATE)
        return pboc.diversify(self.store.material(stored), chip_serial)

    def _terminal_key(self, ctx: Context, terminal_no: bytes, purpose: str) -> bytes:
        """TMK = div(MTMK, 0000 ‖ terminal number BCD(6)), one level (hsm_contract.md)."""
        stored = self._key(ctx, MTMK, MASTER_USAGE[MTMK], purpose)
        ctx.audit["terminal"] = terminal_no.hex().upper()
        return pboc.diversify(self.store.material(stored), b"\x00\x00" + terminal_no)

    # --- handlers: control ------------------------------------------------------------------

    def _ping(self, ctx: Context) -> dict[str, Any]:
        return {"pong": True, "mode": "development" if self.development else "production"}

    def _key_generate(self, ctx: Context) -> dict[str, Any]:
        label, usage = ctx.label(), ctx.str_field("usage")
        algorithm = ctx.str_field("algorithm", optional=True) or TDES
        assert usage is not None  # noqa: S101 - not optional
        stored = self.store.create(label, usage, algorithm)
        ctx.uses(stored)
        return stored.info()

    def _key_import(self, ctx: Context) -> dict[str, Any]:
        if not self.development:
            raise HsmError(E.FORBIDDEN, "clear key import is allowed in development mode only")
        label, usage = ctx.label(), ctx.str_field("usage")
        algorithm = ctx.str_field("algorithm", optional=True) or TDES
        assert usage is not None  # noqa: S101 - not optional
        stored = self.store.create(label, usage, algorithm, ctx.hex_field("key", max_length=64))
        ctx.uses(stored)
        return stored.info()

    def _key_info(self, ctx: Context) -> dict[str, Any]:
        version = ctx.int_field("version", 0xFFFF, optional=True, default=-1)
        stored = self.store.get(ctx.label(), None if version < 0 else version)
        ctx.uses(stored)
        return stored.info()

    def _key_list(self, ctx: Context) -> dict[str, Any]:
        return {"keys": [k.info() for k in self.store.all()]}

    def _key_rotate(self, ctx: Context) -> dict[str, Any]:
        stored = self.store.rotate(ctx.label())
        ctx.uses(stored)
        return stored.info()

    def _audit_head(self, ctx: Context) -> dict[str, Any]:
        # The head before this command's own entry is appended.
        return {"seq": self.audit.seq, "hash": self.audit.head}

    # --- client audit chains (docs/hsm-protocol.md, "Client audit chains") -----------------

    def _chain_fields(self, ctx: Context) -> tuple[str, int, bytes]:
        """The chain's key label, and the entry the request continues from (number and MAC)."""
        label = ctx.label()
        prev_seq = ctx.int_field("prev_seq", MAX_SEQ)
        prev_mac = ctx.hex_field("prev_mac", 32)
        ctx.audit["label"] = label
        ctx.audit["prev_seq"] = prev_seq
        return label, prev_seq, prev_mac

    @staticmethod
    def _chain_list(ctx: Context, name: str) -> list[Any]:
        items = ctx._get(name)
        if not isinstance(items, list) or len(items) > MAX_AUDIT_ENTRIES:
            raise HsmError(E.BAD_REQUEST, f"field {name!r} must be a list of at most 10,000")
        ctx.audit["count"] = len(items)
        return items

    @staticmethod
    def _digest(value: Any, name: str) -> bytes:
        return Context({name: value}, "").hex_field(name, 32)

    def _anchored(self, label: str) -> tuple[int, bytes]:
        anchor = self.audit.anchors.get(label)
        return (anchor.seq, anchor.mac) if anchor is not None else (0, CHAIN_GENESIS)

    @staticmethod
    def _chain(key: bytes, prev_seq: int, prev_mac: bytes, digests: list[bytes]) -> list[bytes]:
        macs: list[bytes] = []
        mac = prev_mac
        for offset, digest in enumerate(digests, start=1):
            mac = chain_mac(key, prev_seq + offset, mac, digest)
            macs.append(mac)
        return macs

    def _audit_checkpoint(self, ctx: Context) -> dict[str, Any]:
        """Seal entries prev_seq+1.. onto the anchored head and anchor the last one in this log.
        The one exception to "onto the head" is a repeat of the last checkpoint (a client that
        crashed, or retried, before storing the answer), which gets the same MACs again; so this
        HSM never makes a MAC that continues a chain anywhere but from its head."""
        label, prev_seq, prev_mac = self._chain_fields(ctx)
        digests = [self._digest(value, "digests[]") for value in self._chain_list(ctx, "digests")]
        head_seq, head_mac = self._anchored(label)
        if prev_seq > MAX_SEQ - len(digests):
            raise HsmError(E.BAD_REQUEST, "the chain would pass entry 2^63-1")
        if (prev_seq, prev_mac) == (head_seq, head_mac):
            stored = self._key(ctx, label, AUDIT_MAC_USAGE, GENERATE)
            macs = self._chain(self.store.material(stored), prev_seq, prev_mac, digests)
            if macs:
                anchor = Anchor(label, prev_seq + 1, head_seq + len(macs), prev_mac, macs[-1],
                                stored.version)  # fmt: skip
                ctx.audit["anchor"] = anchor.to_json()
            return {"macs": [m.hex().upper() for m in macs], "replayed": False}
        last = self.audit.anchors.get(label)
        if (
            last is not None
            and (prev_seq, prev_mac) == (last.first - 1, last.prev)
            and prev_seq + len(digests) == last.seq
        ):
            stored = self._key(ctx, label, AUDIT_MAC_USAGE, VERIFY, last.version)
            macs = self._chain(self.store.material(stored), prev_seq, prev_mac, digests)
            if pboc.mac_equal(macs[-1], last.mac):
                ctx.audit["replayed"] = True
                return {"macs": [m.hex().upper() for m in macs], "replayed": True}
        raise HsmError(
            E.AUDIT_CONFLICT,
            f"the chain under {label} is anchored at entry {head_seq}; "
            f"this request continues from entry {prev_seq}",
        )

    def _audit_verify(self, ctx: Context) -> dict[str, Any]:
        """How many of the entries, chained onto prev, prove out; and the anchored head."""
        label, prev_seq, mac = self._chain_fields(ctx)
        entries = self._chain_list(ctx, "entries")
        keys = [
            self.store.material(self._key(ctx, label, AUDIT_MAC_USAGE, VERIFY, stored.version))
            for stored in self.store.versions(label)
            if stored.state != RETIRED
        ]
        if not keys:
            raise HsmKeyError(E.KEY_STATE, f"key {label} has no usable version")
        if prev_seq > MAX_SEQ - len(entries):
            raise HsmError(E.BAD_REQUEST, "the chain would pass entry 2^63-1")
        valid = 0
        for offset, item in enumerate(entries, start=1):
            if not isinstance(item, dict):
                raise HsmError(E.BAD_REQUEST, "each of 'entries' is {digest, mac}")
            digest = self._digest(item.get("digest"), "entries[].digest")
            claimed = self._digest(item.get("mac"), "entries[].mac")
            if not any(
                pboc.mac_equal(chain_mac(key, prev_seq + offset, mac, digest), claimed)
                for key in keys
            ):
                break
            mac = claimed
            valid += 1
        ctx.audit["valid"] = valid
        head_seq, head_mac = self._anchored(label)
        return {"valid": valid, "anchor": {"seq": head_seq, "mac": head_mac.hex().upper()}}

    # --- personalization (DESIGN §6.2) ------------------------------------------------------

    def _card_keys_export(self, ctx: Context) -> dict[str, Any]:
        asn = ctx.asn()
        chip_serial = ctx.hex_field("chip_serial", 8)
        key_version = ctx.int_field("key_version", 255, optional=True, default=1)
        transport = self._transport_key(ctx, chip_serial)
        card_keys: dict[int, bytes] = {}
        for key_id, master in CARD_KEY_MASTERS:
            card_keys[key_id] = self._card_key(ctx, master, key_version, asn, GENERATE)
        for key_id in PIN_KEY_IDS:
            card_keys[key_id] = pboc.diversify(card_keys[0x01], bytes([key_id]) + bytes(7))
        blocks = [
            {
                "key_id": key_id,
                "version": key_version,
                "algorithm": 0,  # 00 = 3DES (pboc.md §2.1)
                "block": pboc.wrap_key_block(transport, key_id, key_version, 0, key).hex().upper(),
                "kcv": pboc.kcv(key).hex().upper(),
            }
            for key_id, key in sorted(card_keys.items())
        ]
        return {"blocks": blocks}

    def _perso_auth(self, ctx: Context) -> dict[str, Any]:
        transport = self._transport_key(ctx, ctx.hex_field("chip_serial", 8))
        return {
            "cryptogram": pboc.tdes_encrypt(transport, ctx.hex_field("challenge", 8)).hex().upper()
        }

    def _perso_mac(self, ctx: Context) -> dict[str, Any]:
        transport = self._transport_key(ctx, ctx.hex_field("chip_serial", 8))
        iv = pboc.secure_messaging_iv(ctx.hex_field("challenge4", 4))
        return {
            "mac": pboc.mac4(transport, ctx.hex_field("data", max_length=4096), iv).hex().upper()
        }

    def _purse_lock_mac(self, ctx: Context) -> dict[str, Any]:
        """APPLICATION BLOCK / UNBLOCK of one card's purse with secure messaging under its DAMK
        (pboc.md §6.5). The HSM builds the command itself: DAMK signs nothing else here."""
        asn = ctx.asn()
        action = ctx._get("action")
        header = PURSE_LOCK_HEADERS.get(action) if isinstance(action, str) else None
        if header is None:
            raise HsmError(
                E.BAD_REQUEST, f"field 'action' must be one of {sorted(PURSE_LOCK_HEADERS)}"
            )
        key_version = ctx.int_field("key_version", 255, optional=True, default=1)
        iv = pboc.secure_messaging_iv(ctx.hex_field("challenge4", 4))
        damk = self._card_key(ctx, MAMK, key_version, asn, GENERATE)
        ctx.audit["action"] = action
        return {"command": (header + pboc.mac4(damk, header, iv)).hex().upper()}

    # --- purse (pboc.md §3, §4) ---------------------------------------------------------------

    async def _tac_verify(self, ctx: Context) -> dict[str, Any]:
        records = ctx._get("records")
        if not isinstance(records, list):
            raise HsmError(E.BAD_REQUEST, "field 'records' must be a list")
        if len(records) > MAX_RECORDS:
            raise HsmError(E.BAD_REQUEST, f"at most {MAX_RECORDS} records per TAC_VERIFY")
        group_keys: dict[int, bytes] = {}
        for stored in self.store.versions(MTK) if records else []:
            if stored.usage == MASTER_USAGE[MTK] and stored.state != RETIRED:
                group_keys[stored.version] = self._group_key(stored)
                ctx.uses(stored)
        if self._executor is not None and len(records) >= PARALLEL_THRESHOLD:
            loop = asyncio.get_running_loop()
            step = -(-len(records) // self._workers)
            parts = await asyncio.gather(
                *(
                    loop.run_in_executor(
                        self._executor, worker_verify, records[i : i + step], group_keys, i
                    )
                    for i in range(0, len(records), step)
                )
            )
            results: list[bool] = []
            errors: dict[str, str] = {}
            for part_results, part_errors in parts:
                results.extend(part_results)
                errors.update(part_errors)
        else:
            results, errors = self._tac.verify(records, group_keys)
        ctx.audit.update(
            {"records": len(records), "valid": sum(results), "invalid_fields": len(errors)}
        )
        answer: dict[str, Any] = {"results": results}
        if errors:
            answer["errors"] = errors
        return answer

    def _load_authorize(self, ctx: Context) -> dict[str, Any]:
        asn = ctx.asn()
        key_version = ctx.int_field("key_version", 255)
        random4 = ctx.hex_field("random", 4)
        online_counter = ctx.int_field("online_counter", 0xFFFF)
        balance_before = ctx.int_field("balance_before", 0xFFFFFFFF)
        amount = ctx.int_field("amount", 0xFFFFFFFF)
        tx_type = ctx.int_field("tx_type", 255)
        if tx_type not in (1, 2):
            raise HsmError(E.BAD_REQUEST, "field 'tx_type' must be 2 (EP load) or 1 (ED load)")
        terminal_no = ctx.hex_field("terminal_no", 6)
        mac1 = ctx.hex_field("mac1", 4)
        host_dt = ctx.datetime14("host_datetime")
        ctx.audit.update({"amount": amount, "terminal": terminal_no.hex().upper()})
        # MAC2 is a generation: the load master must be active for this version.
        dlk = self._card_key(ctx, MLK, key_version, asn, GENERATE)
        session = pboc.load_session_key(dlk, random4, online_counter)
        expected = pboc.load_mac1(session, balance_before, amount, tx_type, terminal_no)
        if not pboc.mac_equal(expected, mac1):
            raise HsmError(E.MAC_INVALID, "MAC1 does not verify for this card and load")
        return {
            "mac2": pboc.load_mac2(session, amount, tx_type, terminal_no, host_dt).hex().upper()
        }

    def _purchase_mac1(self, ctx: Context) -> dict[str, Any]:
        asn = ctx.asn()
        key_version = ctx.int_field("key_version", 255)
        random4 = ctx.hex_field("random", 4)
        offline_counter = ctx.int_field("offline_counter", 0xFFFF)
        terminal_serial = ctx.int_field("terminal_serial", 0xFFFFFFFF)
        amount = ctx.int_field("amount", 0xFFFFFFFF)
        tx_type = ctx.int_field("tx_type", 255)
        terminal_no = ctx.hex_field("terminal_no", 6)
        dt = ctx.datetime14("datetime")
        auth_code = ctx.hex_field("auth_code", max_length=9) if "auth_code" in ctx.request else b""
        if len(auth_code) not in (0, 9):
            raise HsmError(E.BAD_REQUEST, "field 'auth_code' must be empty or 9 bytes")
        dpk = self._card_key(ctx, MPK, key_version, asn, GENERATE)
        session = pboc.purchase_session_key(dpk, random4, offline_counter, terminal_serial)
        return {
            "mac1": pboc.purchase_mac1(session, amount, tx_type, terminal_no, dt, auth_code)
            .hex()
            .upper()
        }

    # --- terminals and files ----------------------------------------------------------------

    def _terminal_session_open(self, ctx: Context) -> dict[str, Any]:
        terminal_no = ctx.hex_field("terminal_no", 6)
        tmk = self._terminal_key(ctx, terminal_no, GENERATE)
        session_key = pboc.random_bytes(16)
        pin_key = pboc.random_bytes(16)
        blob = SESSION_BLOB_VERSION + seal(
            self._session_key, terminal_no + session_key, SESSION_AAD
        )
        pin_blob = PIN_BLOB_VERSION + seal(self._pin_blob_key, terminal_no + pin_key, PIN_AAD)
        return {
            "key_under_tmk": pboc.tdes_encrypt(tmk, session_key).hex().upper(),
            "key_under_lmk": blob.hex().upper(),
            "kcv": pboc.kcv(session_key).hex().upper(),
            "pin_key_under_tmk": pboc.tdes_encrypt(tmk, pin_key).hex().upper(),
            "pin_key_under_lmk": pin_blob.hex().upper(),
            "pin_kcv": pboc.kcv(pin_key).hex().upper(),
        }

    def _mac_keys(self, ctx: Context, purpose: str) -> list[tuple[str, bytes]]:
        """The candidate keys of a MAC_GENERATE/MAC_VERIFY key reference, newest first, each
        with its algorithm: ``retail`` (ISO 9797-1 algorithm 3) or ``hmac`` (HMAC-SHA256)."""
        ref = ctx._get("key")
        if not isinstance(ref, dict):
            raise HsmError(E.BAD_REQUEST, "field 'key' must be an object with 'kind'")
        sub = Context(ref, ctx.peer, ctx.audit)
        kind = sub.str_field("kind")
        if kind == "terminal_master":
            return [("retail", self._terminal_key(ctx, sub.hex_field("terminal_no", 6), purpose))]
        if kind == "session":
            blob = sub.hex_field("blob", max_length=256)
            plain = self._unseal_blob(blob, SESSION_BLOB_VERSION, self._session_key, SESSION_AAD)
            ctx.audit["terminal"] = plain[:6].hex().upper()
            return [("retail", plain[6:])]
        if kind == "label":
            return self._label_mac_keys(ctx, sub.label(), purpose)
        raise HsmError(E.BAD_REQUEST, "key kind must be terminal_master, session or label")

    def _label_mac_keys(self, ctx: Context, label: str, purpose: str) -> list[tuple[str, bytes]]:
        """A stored MAC key: ``file-mac`` (our files; generate and verify), ``bank-mac`` (a
        bank's notifications; verify only, so the host can never sign as the bank) or
        ``biller-mac`` (the key shared with one biller: our requests are signed with it and the
        biller's answers and callbacks verified)."""
        usage = self.store.versions(label)[0].usage
        if usage == BANK_MAC_USAGE and purpose == GENERATE:
            raise HsmKeyError(E.KEY_USAGE, f"key {label} is a bank's key: it only verifies")
        if usage not in (FILE_MAC_USAGE, *HMAC_USAGES):
            raise HsmKeyError(E.KEY_USAGE, f"key {label} has usage {usage}, not a MAC usage")
        algorithm = "hmac" if usage in HMAC_USAGES else "retail"
        if purpose == GENERATE:
            return [(algorithm, self.store.material(self._key(ctx, label, usage, GENERATE)))]
        found = [
            (algorithm, self.store.material(self._key(ctx, label, usage, VERIFY, stored.version)))
            for stored in self.store.versions(label)
            if stored.state != RETIRED
        ]
        if not found:
            raise HsmKeyError(E.KEY_STATE, f"key {label} has no usable version")
        return found

    @staticmethod
    def _unseal_blob(blob: bytes, version: bytes, key: bytes, aad: bytes) -> bytes:
        try:
            if blob[:1] != version:
                raise ValueError("unknown blob version")
            return unseal(key, blob[1:], aad)
        except ValueError:
            raise HsmError(E.BLOB_INVALID, "key blob fails its integrity check") from None

    @staticmethod
    def _mac(algorithm: str, key: bytes, data: bytes) -> bytes:
        if algorithm == "hmac":
            return hmac.new(key, data, hashlib.sha256).digest()
        # ISO 9797-1 algorithm 3 (retail MAC), padding method 2, all 8 bytes.
        return pboc.full_mac(key, data)

    def _mac_generate(self, ctx: Context) -> dict[str, Any]:
        data = ctx.hex_field("data", max_length=4 * 1024 * 1024)
        algorithm, key = self._mac_keys(ctx, GENERATE)[0]
        return {"mac": self._mac(algorithm, key, data).hex().upper()}

    def _mac_verify(self, ctx: Context) -> dict[str, Any]:
        data = ctx.hex_field("data", max_length=4 * 1024 * 1024)
        mac = ctx.hex_field("mac", max_length=32)
        keys = self._mac_keys(ctx, VERIFY)
        if len(mac) < 4 or (keys[0][0] == "retail" and len(mac) > 8):
            raise HsmError(E.BAD_REQUEST, "field 'mac' must be 4 to 8 bytes (32 for an HMAC key)")
        if keys[0][0] == "hmac" and len(mac) != 32:
            raise HsmError(E.BAD_REQUEST, "an HMAC key's MAC is 32 bytes (HMAC-SHA256)")
        valid = any(
            pboc.mac_equal(self._mac(algorithm, k, data)[: len(mac)], mac) for algorithm, k in keys
        )
        ctx.audit["valid"] = valid
        return {"valid": valid}

    # --- cardholder PINs (ISO 9564-1 format 0, IBM 3624 offset; hsm_sim/pin.py) -------------

    def _terminal_pin_key(self, ctx: Context) -> bytes:
        ref = ctx._get("pin_key")
        if not isinstance(ref, dict):
            raise HsmError(E.BAD_REQUEST, "field 'pin_key' must be an object with 'kind'")
        sub = Context(ref, ctx.peer, ctx.audit)
        if sub.str_field("kind") != "terminal_pin":
            raise HsmError(E.BAD_REQUEST, "pin_key kind must be terminal_pin")
        blob = sub.hex_field("blob", max_length=256)
        plain = self._unseal_blob(blob, PIN_BLOB_VERSION, self._pin_blob_key, PIN_AAD)
        ctx.audit["terminal"] = plain[:6].hex().upper()
        return plain[6:]

    def _pin_fields(self, ctx: Context) -> tuple[str, str, str]:
        """The clear PIN of the request's block, its PAN and its validation data."""
        pin_key = self._terminal_pin_key(ctx)
        encrypted = ctx.hex_field("pin_block", 8)
        pan = ctx.str_field("pan") or ""
        if not pan.isascii() or not pan.isdigit() or not 13 <= len(pan) <= 19:
            raise HsmError(E.BAD_REQUEST, "field 'pan' must be 13 to 19 digits")
        ctx.audit["pan"] = mask_asn(pan)
        validation = ctx.str_field("validation_data") or ""
        try:
            bytes.fromhex(validation.ljust(16, "F"))
        except ValueError:
            validation = ""
        if not 1 <= len(validation) <= 16:
            raise HsmError(E.BAD_REQUEST, "field 'validation_data' must be 1 to 16 hex digits")
        try:
            pin = pins.decrypt_format0(pin_key, encrypted, pan)
        except pins.PinBlockError as exc:
            raise HsmError(E.PIN_BLOCK_INVALID, str(exc)) from None
        return pin, pan, validation

    def _pvk(self, ctx: Context, purpose: str, version: int | None = None) -> StoredKey:
        return self._key(ctx, PVK, PVK_USAGE, purpose, version)

    def _pin_verify(self, ctx: Context) -> dict[str, Any]:
        offset = ctx.str_field("offset") or ""
        if not offset.isascii() or not offset.isdigit():
            raise HsmError(E.BAD_REQUEST, "field 'offset' must be decimal digits")
        if not pins.MIN_PIN_LENGTH <= len(offset) <= pins.MAX_PIN_LENGTH:
            raise HsmError(E.BAD_REQUEST, "field 'offset' must have 4 to 12 digits")
        version = ctx.int_field("pvk_version", 0xFFFF, optional=True, default=-1)
        stored = self._pvk(ctx, VERIFY, None if version < 0 else version)
        pin, _pan, validation = self._pin_fields(ctx)
        valid = pins.verify_offset(self.store.material(stored), validation, pin, offset)
        ctx.audit["valid"] = valid
        return {"valid": valid}

    def _pin_offset_generate(self, ctx: Context) -> dict[str, Any]:
        low = ctx.int_field("min_length", pins.MAX_PIN_LENGTH, optional=True, default=4)
        high = ctx.int_field("max_length", pins.MAX_PIN_LENGTH, optional=True, default=12)
        if not pins.MIN_PIN_LENGTH <= low <= high:
            raise HsmError(E.BAD_REQUEST, "need 4 <= min_length <= max_length <= 12")
        stored = self._pvk(ctx, GENERATE)
        pin, _pan, validation = self._pin_fields(ctx)
        refusal = pins.policy_refusal(pin, low, high)
        if refusal is not None:
            raise HsmError(E.PIN_POLICY, refusal)
        return {
            "offset": pins.ibm3624_offset(self.store.material(stored), validation, pin),
            "pvk_version": stored.version,
        }

    # --- resident data (DESIGN §5: resident IDs encrypted, searched by keyed hash) ----------

    def _data_encrypt(self, ctx: Context) -> dict[str, Any]:
        label = ctx.label()
        stored = self._key(ctx, label, "pii", GENERATE)
        key = self.store.material(stored)
        nonce = secrets.token_bytes(12)
        cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
        cipher.update(label.encode())
        ct, tag = cipher.encrypt_and_digest(ctx.hex_field("plaintext", max_length=65536))
        return {"ciphertext": (nonce + bytes(ct) + bytes(tag)).hex().upper()}

    def _data_decrypt(self, ctx: Context) -> dict[str, Any]:
        label = ctx.label()
        blob = ctx.hex_field("ciphertext", max_length=65536 + 28)
        if len(blob) < 28:
            raise HsmError(E.BAD_REQUEST, "field 'ciphertext' is shorter than nonce and tag")
        # The version is not in the ciphertext (nonce ‖ ct ‖ tag): the GCM tag tells which fits.
        for stored in self.store.versions(label):
            if stored.state == RETIRED:
                continue
            key = self.store.material(self._key(ctx, label, "pii", VERIFY, stored.version))
            if stored.algorithm != AES256:
                continue
            cipher = AES.new(key, AES.MODE_GCM, nonce=blob[:12])
            cipher.update(label.encode())
            try:
                return {
                    "plaintext": bytes(cipher.decrypt_and_verify(blob[12:-16], blob[-16:]))
                    .hex()
                    .upper()
                }
            except ValueError:
                continue
        raise HsmError(
            E.DECRYPT_FAILED, "ciphertext does not authenticate under any version of this key"
        )

    def _data_index(self, ctx: Context) -> dict[str, Any]:
        stored = self._key(ctx, ctx.label(), "pii-index", GENERATE)
        value = ctx.hex_field("value", max_length=65536)
        return {
            "index": hmac.new(self.store.material(stored), value, hashlib.sha256)
            .hexdigest()
            .upper()
        }
