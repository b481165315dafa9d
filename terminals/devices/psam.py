"""The PSAM simulator: the terminal's secure module (reference/pboc.md §2.3).

It holds a terminal number (6 B), a 4-byte terminal transaction serial (incremented on every
INIT SAM FOR PURCHASE, including attempts that are later aborted, §2.3), the purchase master
key by version, and the application maintenance master MAMK (real PSAMs hold it so terminals
can block blacklisted cards on the spot, §6.5).

APDUs:

- ``00A4 04 00 06 BDA8C9E8B2BF`` / ``00A4 00 00 02 1001``: select the purse application DF.
- ``00B0 96 00 06``: terminal number (EF 0016); ``00B0 97 00 01``: key index (EF 0017).
- ``80CA 00 00 09 <auth code>``: the card's 住建部 auth code, added to the next MAC1 (§3.2).
- ``8070 00 00 1C|24``: INIT SAM FOR PURCHASE. Data: Random(4) OfflineCtr(2) Amount(4)
  TxType(1) Date(4) Time(3) KeyVer(1) AlgId(1) ASN(8) [GroupFactor(8)]. With one factor the
  PSAM applies its own issuer group factor first; with two, the one given. Answer
  TermTxSerial(4) ‖ MAC1(4).
- ``8072 00 00 04 MAC2``: CREDIT SAM FOR PURCHASE: ``9000`` if MAC2 is the card's, else ``9302``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hsm_sim import pboc
from terminals.devices import dev_keys
from terminals.devices.apdu import (
    SW_CLA_NOT_SUPPORTED,
    SW_FILE_NOT_FOUND,
    SW_INS_NOT_SUPPORTED,
    SW_MAC_INVALID,
    SW_REF_DATA_NOT_FOUND,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    SW_WRONG_STATE,
    Apdu,
    StatusError,
    T0Chaining,
    read_json,
    sw_bytes,
    write_json_atomic,
)

PSAM_DF_NAME: Final = "建设部".encode("gbk")  # BDA8C9E8B2BF
PSAM_ATR_PREFIX: Final = bytes.fromhex("3B6C0000") + b"PSAM"


@dataclass(slots=True)
class PsamState:
    terminal_no: bytes
    serial: int = 0
    purchase_keys: dict[int, bytes] = field(
        default_factory=lambda: {dev_keys.KEY_VERSION: dev_keys.MPK}
    )
    maintenance_key: bytes = dev_keys.MAMK
    group_factor: bytes = dev_keys.GROUP_FACTOR
    key_index: int = 0x01
    chip_serial: bytes = bytes(8)

    def to_json(self) -> dict[str, Any]:
        return {
            "terminal_no": self.terminal_no.hex(),
            "serial": self.serial,
            "purchase_keys": {str(v): k.hex() for v, k in self.purchase_keys.items()},
            "maintenance_key": self.maintenance_key.hex(),
            "group_factor": self.group_factor.hex(),
            "key_index": self.key_index,
            "chip_serial": self.chip_serial.hex(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PsamState:
        h = bytes.fromhex
        return cls(
            terminal_no=h(d["terminal_no"]),
            serial=int(d["serial"]),
            purchase_keys={int(v): h(k) for v, k in d["purchase_keys"].items()},
            maintenance_key=h(d["maintenance_key"]),
            group_factor=h(d["group_factor"]),
            key_index=int(d["key_index"]),
            chip_serial=h(d["chip_serial"]),
        )


class Psam:
    """A PSAM: ``process(apdu) -> response ‖ SW``; optional JSON file keeps the serial."""

    def __init__(
        self, state: PsamState, *, state_path: Path | str | None = None, t0: bool = False
    ) -> None:
        if len(state.terminal_no) != 6:
            raise ValueError("terminal number must be 6 bytes")
        self.state = state
        self.state_path = Path(state_path) if state_path is not None else None
        self._t0 = T0Chaining(t0)
        self._pending: tuple[bytes, int] | None = None  # (SESPK, amount) of the last 8070
        self._auth_code = b""

    @classmethod
    def dev(
        cls, terminal_no: str, *, state_path: Path | str | None = None, t0: bool = False
    ) -> Psam:
        """A PSAM with the development purchase and maintenance masters (DESIGN §6.1)."""
        if len(terminal_no) != 12 or not terminal_no.isdigit():
            raise ValueError("terminal number must be 12 digits")
        return cls(
            PsamState(
                terminal_no=bytes.fromhex(terminal_no),
                chip_serial=bytes.fromhex("50" + terminal_no + "00"),
            ),
            state_path=state_path,
            t0=t0,
        )

    @classmethod
    def load(cls, path: Path | str, *, t0: bool = False) -> Psam:
        return cls(PsamState.from_json(read_json(Path(path))), state_path=path, t0=t0)

    @property
    def atr(self) -> bytes:
        return PSAM_ATR_PREFIX + self.state.chip_serial

    @property
    def terminal_no(self) -> bytes:
        return self.state.terminal_no

    def power_on(self) -> None:
        self._pending = None
        self._auth_code = b""
        self._t0.pending = b""

    power_off = power_on

    def process(self, apdu: bytes) -> bytes:
        try:
            cmd = Apdu.parse(apdu)
            if (cmd.cla, cmd.ins) == (0x00, 0xC0):
                return self._t0.get_response(cmd.le)
            self._t0.pending = b""
            return self._t0.wrap(apdu, self._dispatch(cmd) + b"\x90\x00")
        except StatusError as e:
            return sw_bytes(e.sw)
        except pboc.CryptoInputError:
            return sw_bytes(SW_WRONG_DATA)

    def _dispatch(self, cmd: Apdu) -> bytes:
        key = (cmd.cla, cmd.ins)
        if key == (0x00, 0xA4):
            if cmd.data in (PSAM_DF_NAME, b"\x10\x01", b"\x3f\x00"):
                return b""
            raise StatusError(SW_FILE_NOT_FOUND)
        if key == (0x00, 0xB0):
            if cmd.p1 == 0x96:
                return self.state.terminal_no[cmd.p2 :]
            if cmd.p1 == 0x97:
                return bytes((self.state.key_index,))
            raise StatusError(SW_FILE_NOT_FOUND)
        if key == (0x80, 0xCA):
            if len(cmd.data) != 9:
                raise StatusError(SW_WRONG_LENGTH)
            self._auth_code = cmd.data
            return b""
        if key == (0x80, 0x70):
            return self._init_sam_for_purchase(cmd)
        if key == (0x80, 0x72):
            return self._credit_sam_for_purchase(cmd)
        if cmd.ins in (0xA4, 0xB0, 0xCA, 0x70, 0x72):
            raise StatusError(SW_CLA_NOT_SUPPORTED)
        raise StatusError(SW_INS_NOT_SUPPORTED)

    def _init_sam_for_purchase(self, cmd: Apdu) -> bytes:
        if cmd.p1 or cmd.p2:
            raise StatusError(SW_WRONG_P1P2)
        d = cmd.data
        if len(d) not in (0x1C, 0x24):
            raise StatusError(SW_WRONG_LENGTH)
        random, counter, amount, tx_type = (
            d[0:4],
            int.from_bytes(d[4:6], "big"),
            int.from_bytes(d[6:10], "big"),
            d[10],
        )
        dt14 = d[11:18].hex()
        version, asn = d[18], d[20:28]
        group = d[28:36] if len(d) == 0x24 else self.state.group_factor
        master = self.state.purchase_keys.get(version)
        if master is None:
            raise StatusError(SW_REF_DATA_NOT_FOUND)
        # The serial advances on every INIT, even for attempts later aborted (reference §2.3).
        self.state.serial = (self.state.serial + 1) & 0xFFFFFFFF
        serial = self.state.serial
        if self.state_path is not None:
            write_json_atomic(self.state_path, self.state.to_json())
        dpk = pboc.diversify_path(master, group, asn)
        sk = pboc.purchase_session_key(dpk, random, counter, serial)
        mac1 = pboc.purchase_mac1(
            sk, amount, tx_type, self.state.terminal_no, dt14, self._auth_code
        )
        self._pending, self._auth_code = (sk, amount), b""
        return serial.to_bytes(4, "big") + mac1

    def _credit_sam_for_purchase(self, cmd: Apdu) -> bytes:
        if cmd.p1 or cmd.p2:
            raise StatusError(SW_WRONG_P1P2)
        if len(cmd.data) != 4:
            raise StatusError(SW_WRONG_LENGTH)
        pending, self._pending = self._pending, None
        if pending is None:
            raise StatusError(SW_WRONG_STATE)
        session_key, amount = pending
        if not pboc.mac_equal(pboc.purchase_mac2(session_key, amount), cmd.data):
            raise StatusError(SW_MAC_INVALID)
        return b""

    # --- maintenance (reference §6.5) ------------------------------------------------------

    def block_command(
        self, asn: bytes, challenge4: bytes, *, permanent: bool = False, unblock: bool = False
    ) -> bytes:
        """APPLICATION BLOCK (``841E``) or UNBLOCK (``8418``) with its secure-messaging MAC.

        DAMK = div(div(MAMK, group factor), ASN); IV = challenge ‖ 00000000; the MAC covers
        the header with Lc = 04 (reference §1.3).
        """
        header = (
            bytes.fromhex("84180000" if unblock else ("841E0001" if permanent else "841E0000"))
            + b"\x04"
        )
        damk = pboc.diversify_path(self.state.maintenance_key, self.state.group_factor, asn)
        return header + pboc.mac4(damk, header, pboc.secure_messaging_iv(challenge4))
