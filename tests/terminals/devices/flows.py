"""APDU sequences a terminal or counter runs, written out in the tests (no production code)."""

from __future__ import annotations

from dataclasses import dataclass

from cardsvc.reader.link import CardLink, command
from hsm_sim import pboc
from terminals.devices import dev_keys
from terminals.devices.psam import Psam

H = bytes.fromhex
PURSE = H("00A4040009A00000000386980701")
SS = H("00A404000F7378312E73682EC9E7BBE1B1A3D5CF")
TERMINAL = H("321100000001")
DT = "20250102083000"


def apdu(header: str, data: bytes = b"", le: int | None = None) -> bytes:
    raw = H(header) + (bytes((len(data),)) + data if data else b"")
    return raw + (bytes((le,)) if le is not None else b"")


def psam_cmd(psam: Psam, raw: bytes) -> bytes:
    resp = psam.process(raw)
    assert resp[-2:] == b"\x90\x00", resp.hex()
    return resp[:-2]


@dataclass
class PurchaseInit:
    balance: int
    counter: int
    key_version: int
    algorithm: int
    random: bytes


def init_purchase(
    link: CardLink, amount: int, *, capp: bool = False, terminal: bytes = TERMINAL
) -> PurchaseInit:
    header = "80500302" if capp else "80500102"
    r = command(link, apdu(header, b"\x01" + amount.to_bytes(4, "big") + terminal, 0x0F))
    assert len(r) == 15
    return PurchaseInit(
        int.from_bytes(r[0:4], "big"), int.from_bytes(r[4:6], "big"), r[9], r[10], r[11:15]
    )


def sam_mac1(
    psam: Psam,
    init: PurchaseInit,
    amount: int,
    asn: bytes,
    *,
    tx_type: int = 0x06,
    two_level: bool = True,
) -> tuple[int, bytes]:
    data = (
        init.random + init.counter.to_bytes(2, "big") + amount.to_bytes(4, "big")
        + bytes((tx_type,)) + H(DT) + bytes((init.key_version, init.algorithm)) + asn
        + (dev_keys.GROUP_FACTOR if two_level else b"")
    )  # fmt: skip
    r = psam_cmd(psam, apdu("80700000", data, 0x08))
    return int.from_bytes(r[0:4], "big"), r[4:8]


def debit_apdu(serial: int, mac1: bytes) -> bytes:
    return apdu("80540100", serial.to_bytes(4, "big") + H(DT) + mac1, 0x08)


def read_asn(link: CardLink) -> bytes:
    command(link, PURSE)
    return command(link, H("00B0950000"))[12:20]


def dtk(asn: bytes) -> bytes:
    return dev_keys.card_key(dev_keys.MTK, asn)


def purchase(
    link: CardLink, psam: Psam, amount: int, *, auth_code: bool = False
) -> tuple[int, bytes, bytes]:
    """A full purchase; returns (terminal serial, TAC, MAC2) after the PSAM accepted MAC2."""
    asn = read_asn(link)
    if auth_code:
        code = command(link, H("80CA000009"))
        psam_cmd(psam, apdu("80CA0000", code))
    init = init_purchase(link, amount, terminal=psam.terminal_no)
    serial, mac1 = sam_mac1(psam, init, amount, asn)
    r = command(link, debit_apdu(serial, mac1))
    tac, mac2 = r[0:4], r[4:8]
    psam_cmd(psam, apdu("80720000", mac2))
    return serial, tac, mac2


def sm_mac(key: bytes, challenge: bytes, header: bytes, body: bytes) -> bytes:
    return pboc.mac4(key, header + body, pboc.secure_messaging_iv(challenge[:4]))


def challenge(link: CardLink, n: int = 4) -> bytes:
    return command(link, apdu("00840000", le=n))
