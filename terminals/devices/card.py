"""The virtual citizen card: a pure-Python APDU processor (bytes in, response ‖ SW out).

It speaks the real protocol (reference/pboc.md; DESIGN §6) so that terminals, the counter agent
and pcscd (through ``terminals.devices.vpcd``) cannot tell it from a chip. Two applications:

Purse (住建部 city-union EP, AID ``A00000000386980701``, DF 3F01), reference §3-§6:

======  ====  ========================================================================
EF      SFI   content
======  ====  ========================================================================
0015    15    public info, 30 B binary: IssuerCode(2) CityCode(2) Industry(2) RFU(2)
              AppType(1) AppVersion(1) Interop(2) ASN(8) Start(4) Expiry(4) MainType(1)
              SubType(1) (§6.2)
0016    16    holder, 55 B binary: CardType(1) StaffFlag(1) Name(20, GBK, 00-padded)
              IdNumber(32, ASCII, 00-padded) IdType(1) (§6.3)
0017    17    compound (CAPP) records, 48 B each: Tag(1) 2E LockFlag(1) payload(45);
              one record per tag 01 bus, 02 rail, 03 taxi, 04 parking, 09 other (§5.2)
0018    18    purchase log, cyclic, 10 records of 23 B, record 1 = newest (§6.3)
001A    1A    load log, same layout
======  ====  ========================================================================

Log record (23 B): Counter after the transaction(2) Overdraft(3) Amount(4) TxType(1)
TermNo(6) Date(4) Time(3).

Social-security application (SSSE), selected by name ``sx1.sh.`` + GBK ``社会保障``
(``7378312E73682EC9E7BBE1B1A3D5CF``, reference §6.1). Its layouts are ours (the MOHRSS text is
not public; DESIGN §6 names the fields):

====  ====  =========================================================================
EF    SFI   content
====  ====  =========================================================================
EF05  05    card identification, 32 B: SSCardNo(9, ASCII) CardType(1: 01 social-security,
            02 citizen card) IssuerRegion(6, ASCII division code, e.g. "321100")
            IssueDate(4, BCD) ExpiryDate(4, BCD) SpecVersion(4, ASCII "3.00") RFU(4)
EF06  06    holder, 56 B: ResidentId(18, ASCII) Name(30, GBK, 00-padded) Sex(1, ASCII
            "1" male / "2" female, GB/T 2261.1) BirthDate(4, BCD) RFU(3)
====  ====  =========================================================================

Card-OS decisions where the reference leaves room (documented here so tests pin them):

- ATR ``3B 6C 00 00 'C' 'S' 'V' 'C' <chip serial 8 B>``: T=0, 12 historical bytes, the last 8
  bytes are the chip serial (DESIGN §6.2).
- Key ids (WRITE KEY, DESIGN §6.2): 01 DAMK, 02 DPK, 03 DLK, 04 DTK, 05 DPUK, 06 DRPK, 10 SS.
  INITIALIZE accepts key index 01 or the stored key version; anything else, or a missing
  key, is ``9403``. The card answers with the stored version and algorithm.
- MAC1/MAC2 failures count on the card; the third failure in a row blocks the purse
  temporarily and answers ``6985`` (reference §3.3); a good MAC resets the count.
- A blocked purse still selects (``6A81`` temporary, ``9303`` permanent) so that reads and
  APPLICATION UNBLOCK remain possible; transaction commands answer the same status word.
- GET TRANSACTION PROVE keeps the proof of the last transaction only (type, counter after
  increment, MAC, TAC); for a load the MAC is ``00000000`` (§6.4).
- Secure messaging (APPLICATION BLOCK/UNBLOCK under DAMK; WRITE KEY and UPDATE BINARY under the
  transport key KT): IV = the last GET CHALLENGE (its first 4 bytes) ‖ ``00000000``, the MAC
  covers CLA INS P1 P2 Lc (Lc counting the MAC) ‖ command data without the MAC (§1.3). A
  challenge is used once.
- Personalization (DESIGN §6.2) needs EXTERNAL AUTHENTICATE first (else ``6982``); plain
  UPDATE BINARY is refused with ``6982``; after END PERSONALIZATION the transport key is gone
  and WRITE KEY / UPDATE BINARY answer ``6985``.
- VERIFY PIN: 3 tries, ``63Cx`` then ``6983``; loads do not require it (the counter checks
  the holder).
- Counters at ``FFFF`` refuse INITIALIZE with ``9402``. Loads beyond ``max_balance`` → ``6985``.

Every change of balance, counters, logs, compound records and proof is one atomic state swap,
persisted (when the card has a file) with write-temp + fsync + rename before the answer leaves
the card. ``tear_next_commit()`` makes the next commit happen and then raises
:class:`~terminals.devices.apdu.CardTorn` instead of answering.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hsm_sim import pboc
from terminals.devices import dev_keys
from terminals.devices.apdu import (
    SW_APP_BLOCKED,
    SW_AUTH_FAILED,
    SW_AUTH_METHOD_BLOCKED,
    SW_BALANCE_INSUFFICIENT,
    SW_CAPP_RECORD_LOCKED,
    SW_CLA_NOT_SUPPORTED,
    SW_CONDITIONS_NOT_SATISFIED,
    SW_COUNTER_MAX,
    SW_FILE_INCOMPATIBLE,
    SW_FILE_NOT_FOUND,
    SW_FUNCTION_NOT_SUPPORTED,
    SW_INS_NOT_SUPPORTED,
    SW_KEY_NOT_FOUND,
    SW_MAC_INVALID,
    SW_PROOF_UNAVAILABLE,
    SW_RECORD_NOT_FOUND,
    SW_SECURITY_NOT_SATISFIED,
    SW_SM_MAC_WRONG,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    SW_WRONG_STATE,
    Apdu,
    CardTorn,
    StatusError,
    T0Chaining,
    read_json,
    sw_bytes,
    write_json_atomic,
)

PURSE_AID: Final = bytes.fromhex("A00000000386980701")
SS_NAME: Final = b"sx1.sh." + "社会保障".encode("gbk")
ATR_PREFIX: Final = bytes.fromhex("3B6C0000") + b"CSVC"

EF_PUBLIC: Final = 0x15
EF_HOLDER: Final = 0x16
EF_CAPP: Final = 0x17
EF_PURCHASE_LOG: Final = 0x18
EF_LOAD_LOG: Final = 0x1A
EF_SS_CARD: Final = 0x05
EF_SS_HOLDER: Final = 0x06

FILE_SIZES: Final = {EF_PUBLIC: 30, EF_HOLDER: 55, EF_SS_CARD: 32, EF_SS_HOLDER: 56}
PURSE_BINARY: Final = frozenset({EF_PUBLIC, EF_HOLDER})
PURSE_RECORDS: Final = frozenset({EF_CAPP, EF_PURCHASE_LOG, EF_LOAD_LOG})
SS_BINARY: Final = frozenset({EF_SS_CARD, EF_SS_HOLDER})

CAPP_TAGS: Final = (0x01, 0x02, 0x03, 0x04, 0x09)
CAPP_RECORD_LEN: Final = 48
LOG_RECORD_LEN: Final = 23
LOG_DEPTH: Final = 10
KEY_IDS: Final = frozenset(dev_keys.MASTER_FOR_KEY_ID)

TX_LOAD_EP: Final = 0x02
TX_PURCHASE_EP: Final = 0x06
TX_CAPP: Final = 0x09

PIN_TRIES: Final = 3
MAC_ERROR_LIMIT: Final = 3
DEFAULT_MAX_BALANCE: Final = 100_000  # fen: 1000 yuan, the usual purse ceiling
MAX_COUNTER: Final = 0xFFFF


class App(enum.Enum):
    MF = "mf"
    PURSE = "purse"
    SS = "ss"


class Lock(enum.StrEnum):
    NONE = "none"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class CardKey:
    version: int
    algorithm: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Proof:
    """The last transaction's proof for GET TRANSACTION PROVE (reference §6.4)."""

    tx_type: int
    counter: int  # after the increment
    mac: bytes
    tac: bytes


@dataclass(frozen=True, slots=True)
class CardState:
    """Everything the chip keeps in EEPROM. Replaced as a whole on every commit."""

    chip_serial: bytes
    transport_key: bytes | None
    keys: dict[int, CardKey] = field(default_factory=dict)
    files: dict[int, bytes] = field(default_factory=dict)
    balance: int = 0
    max_balance: int = DEFAULT_MAX_BALANCE
    offline_counter: int = 0
    online_counter: int = 0
    purchase_log: tuple[bytes, ...] = ()
    load_log: tuple[bytes, ...] = ()
    capp_records: tuple[bytes, ...] = ()
    proof: Proof | None = None
    pin: bytes = bytes.fromhex("123456")
    pin_tries: int = PIN_TRIES
    lock: Lock = Lock.NONE
    auth_code: bytes = bytes(9)
    mac_errors: int = 0

    @property
    def asn(self) -> bytes:
        return self.files[EF_PUBLIC][12:20]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "chip_serial": self.chip_serial.hex(),
            "transport_key": self.transport_key.hex() if self.transport_key else None,
            "keys": {
                f"{kid:02X}": {
                    "version": k.version,
                    "algorithm": k.algorithm,
                    "value": k.value.hex(),
                }
                for kid, k in self.keys.items()
            },
            "files": {f"{sfi:02X}": data.hex() for sfi, data in self.files.items()},
            "balance": self.balance,
            "max_balance": self.max_balance,
            "offline_counter": self.offline_counter,
            "online_counter": self.online_counter,
            "purchase_log": [r.hex() for r in self.purchase_log],
            "load_log": [r.hex() for r in self.load_log],
            "capp_records": [r.hex() for r in self.capp_records],
            "proof": None
            if self.proof is None
            else {
                "tx_type": self.proof.tx_type,
                "counter": self.proof.counter,
                "mac": self.proof.mac.hex(),
                "tac": self.proof.tac.hex(),
            },
            "pin": self.pin.hex(),
            "pin_tries": self.pin_tries,
            "lock": self.lock.value,
            "auth_code": self.auth_code.hex(),
            "mac_errors": self.mac_errors,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CardState:
        h = bytes.fromhex
        proof = d.get("proof")
        return cls(
            chip_serial=h(d["chip_serial"]),
            transport_key=h(d["transport_key"]) if d.get("transport_key") else None,
            keys={
                int(kid, 16): CardKey(int(k["version"]), int(k["algorithm"]), h(k["value"]))
                for kid, k in d["keys"].items()
            },
            files={int(sfi, 16): h(data) for sfi, data in d["files"].items()},
            balance=int(d["balance"]),
            max_balance=int(d["max_balance"]),
            offline_counter=int(d["offline_counter"]),
            online_counter=int(d["online_counter"]),
            purchase_log=tuple(h(r) for r in d["purchase_log"]),
            load_log=tuple(h(r) for r in d["load_log"]),
            capp_records=tuple(h(r) for r in d["capp_records"]),
            proof=None
            if proof is None
            else Proof(
                int(proof["tx_type"]), int(proof["counter"]), h(proof["mac"]), h(proof["tac"])
            ),
            pin=h(d["pin"]),
            pin_tries=int(d["pin_tries"]),
            lock=Lock(d["lock"]),
            auth_code=h(d["auth_code"]),
            mac_errors=int(d["mac_errors"]),
        )


@dataclass(slots=True)
class _TxSession:
    """An INITIALIZE in progress (RAM only; lost on reset, SELECT or the next INITIALIZE)."""

    kind: int  # P1 of INITIALIZE: 00 load, 01 purchase, 03 CAPP
    key: CardKey
    amount: int
    terminal_no: bytes
    random: bytes
    counter: int
    balance: int
    session_key: bytes = b""


@dataclass(slots=True)
class _Session:
    app: App | None = None
    current_ef: int | None = None
    challenge: bytes | None = None
    tx: _TxSession | None = None
    capp_cache: dict[int, bytes] = field(default_factory=dict)
    auth_code_read: bool = False
    perso_open: bool = False
    pin_ok: bool = False


def make_atr(chip_serial: bytes) -> bytes:
    if len(chip_serial) != 8:
        raise ValueError("chip serial must be 8 bytes")
    return ATR_PREFIX + chip_serial


def _blank_capp_records() -> tuple[bytes, ...]:
    return tuple(
        bytes((tag, CAPP_RECORD_LEN - 2, 0)) + bytes(CAPP_RECORD_LEN - 3) for tag in CAPP_TAGS
    )


def _log_record(counter: int, amount: int, tx_type: int, terminal_no: bytes, dt: bytes) -> bytes:
    """Counter(2) Overdraft(3) Amount(4) TxType(1) TermNo(6) Date(4) Time(3) (reference §6.3)."""
    return (
        counter.to_bytes(2, "big")
        + bytes(3)
        + amount.to_bytes(4, "big")
        + bytes((tx_type,))
        + terminal_no
        + dt
    )


def _u32(b: bytes) -> int:
    return int.from_bytes(b, "big")


Handler = Callable[[Apdu], bytes]


class VirtualCard:
    """One card: ``process(apdu) -> response ‖ SW``. Not thread-safe (a chip serves one reader)."""

    def __init__(
        self, state: CardState, *, state_path: Path | str | None = None, t0: bool = False
    ) -> None:
        self._state = state
        self.state_path = Path(state_path) if state_path is not None else None
        self._s = _Session()
        self._t0 = T0Chaining(t0)
        self._tear_next = False
        self._handlers: dict[tuple[int, int], Handler] = {
            (0x00, 0xA4): self._select,
            (0x00, 0xB0): self._read_binary,
            (0x00, 0xB2): self._read_record,
            (0x00, 0x84): self._get_challenge,
            (0x00, 0x82): self._external_authenticate,
            (0x00, 0x20): self._verify_pin,
            (0x00, 0xD6): self._update_binary_plain,
            (0x04, 0xD6): self._update_binary_sm,
            (0x80, 0x5C): self._get_balance,
            (0x80, 0xCA): self._get_auth_code,
            (0x80, 0x50): self._initialize,
            (0x80, 0x54): self._debit,
            (0x80, 0xDC): self._update_capp_cache,
            (0x80, 0x52): self._credit_for_load,
            (0x80, 0x5A): self._get_transaction_prove,
            (0x84, 0x1E): self._application_block,
            (0x84, 0x18): self._application_unblock,
            (0x84, 0xD4): self._write_key,
            (0x80, 0xEE): self._end_personalization,
        }
        self._known_ins = frozenset(ins for _, ins in self._handlers) | {0xC0}

    # --- construction and persistence ----------------------------------------------------

    @classmethod
    def load(cls, path: Path | str, *, t0: bool = False) -> VirtualCard:
        """A card from its state file (a card survives a restart)."""
        return cls(CardState.from_json(read_json(Path(path))), state_path=path, t0=t0)

    def save(self) -> None:
        if self.state_path is not None:
            write_json_atomic(self.state_path, self._state.to_json())

    @property
    def state(self) -> CardState:
        return self._state

    @property
    def atr(self) -> bytes:
        return make_atr(self._state.chip_serial)

    @property
    def chip_serial(self) -> bytes:
        return self._state.chip_serial

    def tear_next_commit(self) -> None:
        """Test hook: the next commit is persisted, then the card 'loses power' (CardTorn)."""
        self._tear_next = True

    def _commit(self, new: CardState) -> None:
        if self.state_path is not None:
            write_json_atomic(self.state_path, new.to_json())
        self._state = new
        if self._tear_next:
            self._tear_next = False
            self.power_off()
            raise CardTorn("card torn after commit")

    # --- power -------------------------------------------------------------------------

    def power_on(self) -> None:
        self._s = _Session()
        self._t0.pending = b""

    def power_off(self) -> None:
        self._s = _Session()
        self._t0.pending = b""

    reset = power_on

    # --- dispatch ----------------------------------------------------------------------

    def process(self, apdu: bytes) -> bytes:
        try:
            cmd = Apdu.parse(apdu)
            if cmd.cla == 0x00 and cmd.ins == 0xC0:
                return self._t0.get_response(cmd.le)
            self._t0.pending = b""
            handler = self._handlers.get((cmd.cla, cmd.ins))
            if handler is None:
                raise StatusError(
                    SW_CLA_NOT_SUPPORTED if cmd.ins in self._known_ins else SW_INS_NOT_SUPPORTED
                )
            return self._t0.wrap(apdu, handler(cmd) + b"\x90\x00")
        except StatusError as e:
            return sw_bytes(e.sw)
        except pboc.CryptoInputError:
            return sw_bytes(SW_WRONG_DATA)

    # --- helpers -----------------------------------------------------------------------

    def _need_app(self, *apps: App) -> App:
        app = self._s.app
        if app is None or app not in apps:
            raise StatusError(SW_CONDITIONS_NOT_SATISFIED)
        return app

    def _need_unlocked_purse(self) -> None:
        self._need_app(App.PURSE)
        lock = self._state.lock
        if lock is Lock.TEMPORARY:
            raise StatusError(SW_FUNCTION_NOT_SUPPORTED)
        if lock is Lock.PERMANENT:
            raise StatusError(SW_APP_BLOCKED)

    @staticmethod
    def _need_lc(cmd: Apdu, *lengths: int) -> None:
        if len(cmd.data) not in lengths:
            raise StatusError(SW_WRONG_LENGTH)

    def _take_challenge(self) -> bytes:
        challenge, self._s.challenge = self._s.challenge, None
        if challenge is None:
            raise StatusError(SW_CONDITIONS_NOT_SATISFIED)
        return challenge

    def _check_sm_mac(self, key: bytes, cmd: Apdu) -> bytes:
        """Verify a trailing secure-messaging MAC4 (reference §1.3); return the data before it."""
        if len(cmd.data) < 4:
            raise StatusError(SW_WRONG_LENGTH)
        body, mac = cmd.data[:-4], cmd.data[-4:]
        iv = pboc.secure_messaging_iv(self._take_challenge()[:4])
        if not pboc.mac_equal(pboc.mac4(key, cmd.header_with_lc + body, iv), mac):
            raise StatusError(SW_SM_MAC_WRONG)
        return body

    def _files_of(self, app: App) -> frozenset[int]:
        if app is App.PURSE:
            return PURSE_BINARY | PURSE_RECORDS
        if app is App.SS:
            return SS_BINARY
        return frozenset()

    def _resolve_ef(self, sfi: int) -> int:
        app = self._s.app
        if sfi == 0:
            if self._s.current_ef is None:
                raise StatusError(SW_FILE_NOT_FOUND)
            return self._s.current_ef
        if app is None or sfi not in self._files_of(app):
            raise StatusError(SW_FILE_NOT_FOUND)
        return sfi

    def _records(self, ef: int) -> tuple[bytes, ...]:
        st = self._state
        if ef == EF_CAPP:
            return st.capp_records
        if ef == EF_PURCHASE_LOG:
            return st.purchase_log
        return st.load_log

    def _key(self, key_id: int, index: int | None = None) -> CardKey:
        key = self._state.keys.get(key_id)
        if key is None or (index is not None and index not in (1, key.version)):
            raise StatusError(SW_KEY_NOT_FOUND)
        return key

    # --- ISO commands ------------------------------------------------------------------

    def _fci(self, name: bytes, proprietary: bytes) -> bytes:
        a5 = b"\xa5" + bytes((len(proprietary),)) + proprietary
        body = b"\x84" + bytes((len(name),)) + name + a5
        return b"\x6f" + bytes((len(body),)) + body

    def _select(self, cmd: Apdu) -> bytes:
        if cmd.p1 == 0x04:
            if cmd.data == PURSE_AID:
                return self._select_purse(cmd)
            if cmd.data == SS_NAME:
                self._enter(App.SS)
                return b"" if cmd.p2 == 0x0C else self._fci(SS_NAME, b"\x9f\x08\x01\x03")
            raise StatusError(SW_FILE_NOT_FOUND)
        if cmd.p1 not in (0x00, 0x02):
            raise StatusError(SW_WRONG_P1P2)
        self._need_lc(cmd, 2)
        fid = int.from_bytes(cmd.data, "big")
        if fid == 0x3F00 and cmd.p1 == 0x00:
            self._enter(App.MF)
            return b""
        if fid == 0x3F01 and cmd.p1 == 0x00:
            return self._select_purse(cmd)
        app = self._s.app
        ef = fid & 0xFF if fid in (0x0005, 0x0006, 0xEF05, 0xEF06) else fid
        if app is None or fid >> 8 not in (0x00, 0xEF) or ef not in self._files_of(app):
            raise StatusError(SW_FILE_NOT_FOUND)
        self._s.current_ef = ef
        return b""

    def _enter(self, app: App) -> None:
        keep_perso, keep_challenge = self._s.perso_open, self._s.challenge
        self._s = _Session(app=app, perso_open=keep_perso, challenge=keep_challenge)

    def _select_purse(self, cmd: Apdu) -> bytes:
        self._enter(App.PURSE)
        fci = (
            b""
            if cmd.p2 == 0x0C
            else self._fci(PURSE_AID, b"\x9f\x0c\x1e" + self._state.files[EF_PUBLIC])
        )
        if self._state.lock is Lock.TEMPORARY:
            raise StatusError(SW_FUNCTION_NOT_SUPPORTED)
        if self._state.lock is Lock.PERMANENT:
            raise StatusError(SW_APP_BLOCKED)
        return fci

    def _read_binary(self, cmd: Apdu) -> bytes:
        if cmd.p1 & 0x80:
            if cmd.p1 & 0x60:
                raise StatusError(SW_WRONG_P1P2)
            ef, offset = self._resolve_ef(cmd.p1 & 0x1F), cmd.p2
        else:
            ef, offset = self._resolve_ef(0), (cmd.p1 << 8) | cmd.p2
        if ef not in FILE_SIZES:
            raise StatusError(SW_FILE_INCOMPATIBLE)
        content = self._state.files[ef]
        if offset > len(content):
            raise StatusError(SW_WRONG_P1P2)
        available = content[offset : offset + 256]
        if cmd.le and cmd.le > len(available):
            raise StatusError(0x6C00 | len(available))
        return available if not cmd.le else available[: cmd.le]

    def _read_record(self, cmd: Apdu) -> bytes:
        if cmd.p2 & 0x07 != 0x04:
            raise StatusError(SW_WRONG_P1P2)
        ef = self._resolve_ef(cmd.p2 >> 3)
        if ef not in PURSE_RECORDS:
            raise StatusError(SW_FILE_INCOMPATIBLE)
        records = self._records(ef)
        if not 1 <= cmd.p1 <= len(records):
            raise StatusError(SW_RECORD_NOT_FOUND)
        record = records[cmd.p1 - 1]
        if cmd.le and cmd.le != len(record):
            raise StatusError(0x6C00 | len(record))
        return record

    def _get_challenge(self, cmd: Apdu) -> bytes:
        if cmd.p1 or cmd.p2:
            raise StatusError(SW_WRONG_P1P2)
        if cmd.data or cmd.le not in (4, 8):
            raise StatusError(SW_WRONG_LENGTH)
        self._s.challenge = os.urandom(cmd.le)
        return self._s.challenge

    def _verify_pin(self, cmd: Apdu) -> bytes:
        if cmd.p1 or cmd.p2:
            raise StatusError(SW_WRONG_P1P2)
        st = self._state
        if st.pin_tries == 0:
            raise StatusError(SW_AUTH_METHOD_BLOCKED)
        if not 2 <= len(cmd.data) <= 6:
            raise StatusError(SW_WRONG_LENGTH)
        if pboc.mac_equal(cmd.data, st.pin):
            if st.pin_tries != PIN_TRIES:
                self._commit(dataclasses.replace(st, pin_tries=PIN_TRIES))
            self._s.pin_ok = True
            return b""
        left = st.pin_tries - 1
        self._s.pin_ok = False
        self._commit(dataclasses.replace(st, pin_tries=left))
        raise StatusError(0x63C0 | left)

    def _update_binary_plain(self, cmd: Apdu) -> bytes:
        # Files are written only under secure messaging (DESIGN §6.2).
        raise StatusError(SW_SECURITY_NOT_SATISFIED)

    # --- purse -------------------------------------------------------------------------

    def _get_balance(self, cmd: Apdu) -> bytes:
        self._need_app(App.PURSE)
        if cmd.p1 != 0x00 or cmd.p2 != 0x02:
            raise StatusError(SW_WRONG_P1P2)
        return self._state.balance.to_bytes(4, "big")

    def _get_auth_code(self, cmd: Apdu) -> bytes:
        """住建部 auth code (reference §3.1): its read puts the code into this session's MAC1."""
        self._need_app(App.PURSE)
        if cmd.p1 or cmd.p2:
            raise StatusError(SW_WRONG_P1P2)
        self._s.auth_code_read = True
        return self._state.auth_code

    def _initialize(self, cmd: Apdu) -> bytes:
        if cmd.p1 not in (0x00, 0x01, 0x03) or cmd.p2 != 0x02:
            raise StatusError(SW_WRONG_P1P2)
        self._need_unlocked_purse()
        self._need_lc(cmd, 11)
        if self._s.tx is not None and self._s.tx.kind == 0x03:
            # reference §3.3: a CAPP session in progress refuses another INITIALIZE
            self._s.tx = None
            self._s.capp_cache = {}
            raise StatusError(SW_WRONG_STATE)
        st = self._state
        index, amount, terminal_no = cmd.data[0], _u32(cmd.data[1:5]), cmd.data[5:11]
        random = os.urandom(4)
        if cmd.p1 == 0x00:
            key = self._key(dev_keys.KEY_DLK, index)
            self._key(dev_keys.KEY_DTK)
            if st.online_counter >= MAX_COUNTER:
                raise StatusError(SW_COUNTER_MAX)
            if st.balance + amount > st.max_balance:
                raise StatusError(SW_CONDITIONS_NOT_SATISFIED)
            sk = pboc.load_session_key(key.value, random, st.online_counter)
            mac1 = pboc.load_mac1(sk, st.balance, amount, TX_LOAD_EP, terminal_no)
            self._s.tx = _TxSession(
                0x00, key, amount, terminal_no, random, st.online_counter, st.balance, sk
            )
            return (
                st.balance.to_bytes(4, "big")
                + st.online_counter.to_bytes(2, "big")
                + bytes((key.version, key.algorithm))
                + random
                + mac1
            )
        key = self._key(dev_keys.KEY_DPK, index)
        self._key(dev_keys.KEY_DTK)
        if st.offline_counter >= MAX_COUNTER:
            raise StatusError(SW_COUNTER_MAX)
        if st.balance < amount:
            raise StatusError(SW_BALANCE_INSUFFICIENT)
        self._s.tx = _TxSession(
            cmd.p1, key, amount, terminal_no, random, st.offline_counter, st.balance
        )
        self._s.capp_cache = {}
        return (
            st.balance.to_bytes(4, "big")
            + st.offline_counter.to_bytes(2, "big")
            + bytes(3)  # overdraft limit: a plain EP does not overdraw (reference §3.3)
            + bytes((key.version, key.algorithm))
            + random
        )

    def _update_capp_cache(self, cmd: Apdu) -> bytes:
        """UPDATE CAPP DATA CACHE (reference §5.1): buffered until DEBIT commits."""
        self._need_unlocked_purse()
        tx = self._s.tx
        if tx is None or tx.kind != 0x03:
            raise StatusError(SW_WRONG_STATE)
        if cmd.p2 >> 3 != EF_CAPP:
            raise StatusError(SW_FILE_NOT_FOUND)
        data = cmd.data
        if len(data) < 3 or len(data) - data[1] != 2:
            raise StatusError(SW_WRONG_DATA)
        if len(data) > CAPP_RECORD_LEN:
            raise StatusError(0x6A84)
        records = self._state.capp_records
        if cmd.p2 & 0x07 == 0x00:
            idx = next((i for i, r in enumerate(records) if r[0] == cmd.p1), None)
        elif cmd.p2 & 0x07 == 0x04:
            idx = cmd.p1 - 1 if 1 <= cmd.p1 <= len(records) else None
        else:
            raise StatusError(SW_WRONG_P1P2)
        if idx is None:
            raise StatusError(SW_RECORD_NOT_FOUND)
        if data[0] != records[idx][0]:
            raise StatusError(SW_WRONG_DATA)
        if records[idx][2] == 0x01:
            raise StatusError(SW_CAPP_RECORD_LOCKED)
        self._s.capp_cache[idx] = data + records[idx][len(data) :]
        return b""

    def _mac_failure(self) -> StatusError:
        """Count a bad MAC1/MAC2; the third in a row blocks the purse (reference §3.3)."""
        st = self._state
        errors = st.mac_errors + 1
        self._s.tx = None
        self._s.capp_cache = {}
        if errors >= MAC_ERROR_LIMIT:
            self._commit(dataclasses.replace(st, mac_errors=0, lock=Lock.TEMPORARY))
            return StatusError(SW_CONDITIONS_NOT_SATISFIED)
        self._commit(dataclasses.replace(st, mac_errors=errors))
        return StatusError(SW_MAC_INVALID)

    def _debit(self, cmd: Apdu) -> bytes:
        if cmd.p1 != 0x01 or cmd.p2 != 0x00:
            raise StatusError(SW_WRONG_P1P2)
        self._need_unlocked_purse()
        tx = self._s.tx
        if tx is None or tx.kind not in (0x01, 0x03):
            raise StatusError(SW_WRONG_STATE)
        self._need_lc(cmd, 15)
        d = cmd.data
        terminal_serial = _u32(d[0:4])
        dt = d[4:11]
        dt14 = dt.hex()
        tx_type = TX_CAPP if tx.kind == 0x03 else TX_PURCHASE_EP
        st = self._state
        auth = st.auth_code if self._s.auth_code_read else b""
        sk = pboc.purchase_session_key(tx.key.value, tx.random, tx.counter, terminal_serial)
        mac1 = pboc.purchase_mac1(sk, tx.amount, tx_type, tx.terminal_no, dt14, auth)
        if not pboc.mac_equal(mac1, d[11:15]):
            raise self._mac_failure()
        mac2 = pboc.purchase_mac2(sk, tx.amount)
        dtk = self._key(dev_keys.KEY_DTK).value
        tac = pboc.purchase_tac(dtk, tx.amount, tx_type, tx.terminal_no, terminal_serial, dt14)
        counter = tx.counter + 1
        record = _log_record(counter, tx.amount, tx_type, tx.terminal_no, dt)
        capp = st.capp_records
        if self._s.capp_cache:
            capp = tuple(self._s.capp_cache.get(i, r) for i, r in enumerate(capp))
        new = dataclasses.replace(
            st,
            balance=st.balance - tx.amount,
            offline_counter=counter,
            purchase_log=((record, *st.purchase_log))[:LOG_DEPTH],
            capp_records=capp,
            proof=Proof(tx_type, counter, mac2, tac),
            mac_errors=0,
        )
        self._s.tx = None
        self._s.capp_cache = {}
        self._s.auth_code_read = False
        self._commit(new)
        return tac + mac2

    def _credit_for_load(self, cmd: Apdu) -> bytes:
        if cmd.p1 or cmd.p2:
            raise StatusError(SW_WRONG_P1P2)
        self._need_unlocked_purse()
        tx = self._s.tx
        if tx is None or tx.kind != 0x00:
            raise StatusError(SW_WRONG_STATE)
        self._need_lc(cmd, 11)
        dt = cmd.data[0:7]
        dt14 = dt.hex()
        mac2 = pboc.load_mac2(tx.session_key, tx.amount, TX_LOAD_EP, tx.terminal_no, dt14)
        if not pboc.mac_equal(mac2, cmd.data[7:11]):
            raise self._mac_failure()
        st = self._state
        balance = st.balance + tx.amount
        dtk = self._key(dev_keys.KEY_DTK).value
        tac = pboc.load_tac(dtk, balance, tx.counter, tx.amount, TX_LOAD_EP, tx.terminal_no, dt14)
        counter = tx.counter + 1
        record = _log_record(counter, tx.amount, TX_LOAD_EP, tx.terminal_no, dt)
        new = dataclasses.replace(
            st,
            balance=balance,
            online_counter=counter,
            load_log=((record, *st.load_log))[:LOG_DEPTH],
            proof=Proof(TX_LOAD_EP, counter, bytes(4), tac),
            mac_errors=0,
        )
        self._s.tx = None
        self._commit(new)
        return tac

    def _get_transaction_prove(self, cmd: Apdu) -> bytes:
        self._need_app(App.PURSE)
        if cmd.p1 != 0x00:
            raise StatusError(SW_WRONG_P1P2)
        self._need_lc(cmd, 2)
        proof = self._state.proof
        if (
            proof is None
            or proof.tx_type != cmd.p2
            or proof.counter != int.from_bytes(cmd.data, "big")
        ):
            raise StatusError(SW_PROOF_UNAVAILABLE)
        return proof.mac + proof.tac

    def _application_block(self, cmd: Apdu) -> bytes:
        """APPLICATION BLOCK under DAMK (reference §6.5): P2 00 temporary, 01 permanent."""
        self._need_app(App.PURSE)
        if cmd.p1 != 0x00 or cmd.p2 not in (0x00, 0x01):
            raise StatusError(SW_WRONG_P1P2)
        self._need_lc(cmd, 4)
        self._check_sm_mac(self._key(dev_keys.KEY_DAMK).value, cmd)
        st = self._state
        if st.lock is Lock.PERMANENT:
            raise StatusError(SW_APP_BLOCKED)
        self._s.tx = None
        self._commit(dataclasses.replace(st, lock=Lock.PERMANENT if cmd.p2 else Lock.TEMPORARY))
        return b""

    def _application_unblock(self, cmd: Apdu) -> bytes:
        self._need_app(App.PURSE)
        if cmd.p1 or cmd.p2:
            raise StatusError(SW_WRONG_P1P2)
        self._need_lc(cmd, 4)
        self._check_sm_mac(self._key(dev_keys.KEY_DAMK).value, cmd)
        st = self._state
        if st.lock is Lock.PERMANENT:
            raise StatusError(SW_APP_BLOCKED)
        if st.lock is not Lock.NONE:
            self._commit(dataclasses.replace(st, lock=Lock.NONE, mac_errors=0))
        return b""

    # --- personalization (DESIGN §6.2) ---------------------------------------------------

    def _transport_key(self) -> bytes:
        kt = self._state.transport_key
        if kt is None:
            raise StatusError(SW_CONDITIONS_NOT_SATISFIED)
        return kt

    def _need_perso(self) -> bytes:
        kt = self._transport_key()
        if not self._s.perso_open:
            raise StatusError(SW_SECURITY_NOT_SATISFIED)
        return kt

    def _external_authenticate(self, cmd: Apdu) -> bytes:
        if cmd.p1 or cmd.p2:
            raise StatusError(SW_WRONG_P1P2)
        kt = self._transport_key()
        self._need_lc(cmd, 8)
        challenge = self._take_challenge()
        if len(challenge) != 8:
            raise StatusError(SW_CONDITIONS_NOT_SATISFIED)
        if not pboc.mac_equal(pboc.tdes_encrypt(kt, challenge), cmd.data):
            self._s.perso_open = False
            raise StatusError(SW_AUTH_FAILED)
        self._s.perso_open = True
        return b""

    def _write_key(self, cmd: Apdu) -> bytes:
        kt = self._need_perso()
        if cmd.p1 != 0x00 or cmd.p2 not in KEY_IDS:
            raise StatusError(SW_WRONG_P1P2)
        if len(cmd.data) != 24 + 4:
            raise StatusError(SW_WRONG_LENGTH)
        block = self._check_sm_mac(kt, cmd)
        try:
            key_id, version, algorithm, value = pboc.unwrap_key_block(kt, block)
        except pboc.CryptoInputError:
            raise StatusError(SW_WRONG_DATA) from None
        if key_id != cmd.p2:
            raise StatusError(SW_WRONG_DATA)
        st = self._state
        self._commit(
            dataclasses.replace(st, keys={**st.keys, key_id: CardKey(version, algorithm, value)})
        )
        return b""

    def _update_binary_sm(self, cmd: Apdu) -> bytes:
        kt = self._need_perso()
        if not cmd.p1 & 0x80 or cmd.p1 & 0x60:
            raise StatusError(SW_WRONG_P1P2)
        ef = self._resolve_ef(cmd.p1 & 0x1F)
        if ef not in FILE_SIZES:
            raise StatusError(SW_FILE_INCOMPATIBLE)
        body = self._check_sm_mac(kt, cmd)
        st = self._state
        content = st.files[ef]
        offset = cmd.p2
        if offset + len(body) > len(content):
            raise StatusError(SW_WRONG_LENGTH)
        updated = content[:offset] + body + content[offset + len(body) :]
        self._commit(dataclasses.replace(st, files={**st.files, ef: updated}))
        return b""

    def _end_personalization(self, cmd: Apdu) -> bytes:
        if cmd.p1 or cmd.p2:
            raise StatusError(SW_WRONG_P1P2)
        self._need_perso()
        self._s.perso_open = False
        self._commit(dataclasses.replace(self._state, transport_key=None))
        return b""


# --- factories -------------------------------------------------------------------------


def blank_state(chip_serial: bytes, *, transport_key: bytes | None = None) -> CardState:
    """A card as it leaves the factory: files created and zeroed, only the transport key."""
    if len(chip_serial) != 8:
        raise ValueError("chip serial must be 8 bytes")
    return CardState(
        chip_serial=chip_serial,
        transport_key=transport_key
        if transport_key is not None
        else dev_keys.transport_key(chip_serial),
        files={ef: bytes(size) for ef, size in FILE_SIZES.items()},
        capp_records=_blank_capp_records(),
        auth_code=b"\x85" + os.urandom(4) * 2,
    )


def make_blank_card(
    chip_serial: bytes, *, state_path: Path | str | None = None, t0: bool = False
) -> VirtualCard:
    """A blank card with ``KT = div(MTRK, chip serial)`` (DESIGN §6.2)."""
    card = VirtualCard(blank_state(chip_serial), state_path=state_path, t0=t0)
    card.save()
    return card


def _bcd(digits: str) -> bytes:
    return bytes.fromhex(digits)


def _fixed(text: str, size: int, encoding: str) -> bytes:
    raw = text.encode(encoding)
    if len(raw) > size:
        raise ValueError(f"{text!r} does not fit {size} bytes")
    return raw + bytes(size - len(raw))


def public_info(asn: bytes, *, city_code: str, start: str, expiry: str) -> bytes:
    """EF 0015, 住建部 layout (reference §6.2)."""
    data = (
        _bcd(city_code) + _bcd(city_code) + b"\x00\x00" + b"\x00\x00" + b"\x01\x01" + b"\x00\x00"
        + asn + _bcd(start) + _bcd(expiry) + b"\x00\x00"
    )  # fmt: skip
    assert len(data) == 30  # noqa: S101 - layout invariant
    return data


def holder_info(name: str, resident_id: str) -> bytes:
    """EF 0016 (reference §6.3): CardType StaffFlag Name(20) IdNumber(32) IdType(00 = 身份证)."""
    return b"\x00\x00" + _fixed(name, 20, "gbk") + _fixed(resident_id, 32, "ascii") + b"\x00"


def ss_card_info(ss_card_no: str, *, region: str, issue_date: str, expiry: str) -> bytes:
    """EF05 (module docstring layout)."""
    return (
        _fixed(ss_card_no, 9, "ascii") + b"\x02" + _fixed(region, 6, "ascii") + _bcd(issue_date)
        + _bcd(expiry) + b"3.00" + bytes(4)
    )  # fmt: skip


def ss_holder_info(resident_id: str, name: str, *, sex: str, birth_date: str) -> bytes:
    """EF06 (module docstring layout)."""
    return (
        _fixed(resident_id, 18, "ascii") + _fixed(name, 30, "gbk") + _fixed(sex, 1, "ascii")
        + _bcd(birth_date) + bytes(3)
    )  # fmt: skip


def make_dev_personalized_card(
    card_no: str,
    balance: int,
    *,
    chip_serial: bytes | None = None,
    holder_name: str = "张三",
    resident_id: str = "32110219900101123X",
    pin: str = "123456",
    start: str = "20240101",
    expiry: str = "20341231",
    state_path: Path | str | None = None,
    t0: bool = False,
) -> VirtualCard:
    """A card personalized with the development keys (DESIGN §6.1), as after issuance.

    ``balance`` is in fen. Keys: ``DxK = div(div(MxK, 3211FF0000000000), ASN)``.
    """
    asn = dev_keys.asn_from_card_no(card_no)
    if not 0 <= balance <= 0xFFFFFFFF:
        raise ValueError("balance out of range")
    serial = chip_serial if chip_serial is not None else bytes.fromhex("C0") + asn[1:]
    keys = {
        key_id: CardKey(dev_keys.KEY_VERSION, dev_keys.ALGORITHM_3DES, value)
        for key_id, value in dev_keys.card_keys(asn).items()
    }
    birth = resident_id[6:14]
    sex = "1" if int(resident_id[16]) % 2 else "2"
    files = {
        EF_PUBLIC: public_info(asn, city_code=card_no[:4], start=start, expiry=expiry),
        EF_HOLDER: holder_info(holder_name, resident_id),
        EF_SS_CARD: ss_card_info(
            "S" + card_no[-8:], region=card_no[:4] + "00", issue_date=start, expiry=expiry
        ),
        EF_SS_HOLDER: ss_holder_info(resident_id, holder_name, sex=sex, birth_date=birth),
    }
    state = dataclasses.replace(
        blank_state(serial),
        transport_key=None,
        keys=keys,
        files=files,
        balance=balance,
        max_balance=max(DEFAULT_MAX_BALANCE, balance),
        pin=bytes.fromhex(pin),
    )
    card = VirtualCard(state, state_path=state_path, t0=t0)
    card.save()
    return card
