"""Reading what a citizen card holds, over any :class:`CardLink` (no keys needed).

Byte layouts: reference/pboc.md §6.2-§6.3 (0015, 0016, logs), §5.2 (SFI 17 compound records);
EF05/EF06 as documented in ``terminals.devices.card``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from cardsvc.reader.errors import CardStatusError, KeyNotSupported, error_for_sw
from cardsvc.reader.link import CardLink, command

PURSE_AID: Final = bytes.fromhex("A00000000386980701")
SS_NAME: Final = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")  # "sx1.sh." + GBK 社会保障


def _apdu(header: str, data: bytes = b"", le: int | None = None) -> bytes:
    raw = bytes.fromhex(header)
    if data:
        raw += bytes((len(data),)) + data
    if le is not None:
        raw += bytes((le,))
    return raw


def select_purse(link: CardLink) -> bytes:
    return command(link, _apdu("00A40400", PURSE_AID), "select purse")


def select_ss(link: CardLink) -> bytes:
    return command(link, _apdu("00A40400", SS_NAME), "select social security")


def read_binary_sfi(link: CardLink, sfi: int, offset: int = 0, le: int = 0) -> bytes:
    return command(link, bytes((0x00, 0xB0, 0x80 | sfi, offset, le)), f"read binary SFI {sfi:02X}")


def read_records(link: CardLink, sfi: int, limit: int = 10) -> list[bytes]:
    """Records 1.. of a record file until 6A83 (record 1 is the newest in a cyclic log)."""
    out: list[bytes] = []
    for n in range(1, limit + 1):
        data, sw = link.transmit(bytes((0x00, 0xB2, n, (sfi << 3) | 0x04, 0x00)))
        if sw == 0x6A83:
            break
        if sw != 0x9000:
            raise CardStatusError(f"read record {n} of SFI {sfi:02X} (SW {sw:04X})", sw)
        out.append(data)
    return out


def get_balance(link: CardLink) -> int:
    return int.from_bytes(command(link, bytes.fromhex("805C000204"), "get balance"), "big")


@dataclass(frozen=True, slots=True)
class LogRecord:
    """A 23-byte purchase/load log record (reference §6.3); counter is after the transaction."""

    counter: int
    amount: int
    tx_type: int
    terminal_no: str
    datetime14: str

    @classmethod
    def parse(cls, raw: bytes) -> LogRecord:
        return cls(
            counter=int.from_bytes(raw[0:2], "big"),
            amount=int.from_bytes(raw[5:9], "big"),
            tx_type=raw[9],
            terminal_no=raw[10:16].hex(),
            datetime14=raw[16:23].hex(),
        )


@dataclass(frozen=True, slots=True)
class CardSnapshot:
    atr: bytes
    asn: bytes
    city_code: str
    ef0015: bytes
    ef0016: bytes
    balance: int
    offline_counter: int | None
    online_counter: int | None
    purchases: list[LogRecord] = field(default_factory=list)
    loads: list[LogRecord] = field(default_factory=list)
    capp_records: list[bytes] = field(default_factory=list)
    ef05: bytes | None = None
    ef06: bytes | None = None
    blocked: str | None = None  # "temporary" (6A81) or "permanent" (9303)

    @property
    def card_no(self) -> str:
        return self.asn.hex()


def _counter(link: CardLink, p1: int, offset: int) -> int | None:
    """Read a counter with a zero-amount INITIALIZE (no state changes on the card)."""
    try:
        data = command(
            link, _apdu(f"8050{p1:02X}02", b"\x01" + bytes(10), 0x10 if p1 == 0 else 0x0F)
        )
    except KeyNotSupported:
        return None
    return int.from_bytes(data[offset : offset + 2], "big")


def read_card(link: CardLink) -> CardSnapshot:
    """Everything a counter shows about a card: 0015/0016, balance, counters, logs, EF05/EF06."""
    _data, sw = link.transmit(_apdu("00A40400", PURSE_AID))
    blocked = {0x6A81: "temporary", 0x9303: "permanent"}.get(sw)
    if sw != 0x9000 and blocked is None:
        raise error_for_sw(sw, "select purse")
    ef0015 = read_binary_sfi(link, 0x15)
    ef0016 = read_binary_sfi(link, 0x16)
    balance = get_balance(link)
    offline = online = None
    if blocked is None:
        offline = _counter(link, 0x01, 4)
        select_purse(link)  # drop the INITIALIZE session
        online = _counter(link, 0x00, 4)
        select_purse(link)
    purchases = [LogRecord.parse(r) for r in read_records(link, 0x18)]
    loads = [LogRecord.parse(r) for r in read_records(link, 0x1A)]
    capp = read_records(link, 0x17)
    ef05 = ef06 = None
    try:
        select_ss(link)
        ef05 = read_binary_sfi(link, 0x05)
        ef06 = read_binary_sfi(link, 0x06)
    except CardStatusError:
        pass
    return CardSnapshot(
        atr=link.atr(),
        asn=ef0015[12:20],
        city_code=ef0015[2:4].hex(),
        ef0015=ef0015,
        ef0016=ef0016,
        balance=balance,
        offline_counter=offline,
        online_counter=online,
        purchases=purchases,
        loads=loads,
        capp_records=capp,
        ef05=ef05,
        ef06=ef06,
        blocked=blocked,
    )
