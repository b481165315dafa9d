"""The personalization commands of our card OS (DESIGN §6.2), sent over any CardLink.

The HSM computes every cryptogram (EXTERNAL AUTHENTICATE answer, key blocks under KT, secure
messaging MACs); this module only builds the APDUs and relays. Links are synchronous (pyscard);
each call here is one short exchange.
"""

from __future__ import annotations

from typing import Final

from cardsvc.hsm import HsmClient
from cardsvc.reader.link import CardLink, command

PURSE_AID: Final = bytes.fromhex("A00000000386980701")
SS_NAME: Final = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")  # "sx1.sh." + GBK 社会保障
TX_LOAD_EP: Final = 0x02


class CountingLink:
    """Wraps a CardLink and counts the APDUs sent (for the job record and bench/personalize.py)."""

    def __init__(self, link: CardLink) -> None:
        self.link = link
        self.count = 0

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        self.count += 1
        return self.link.transmit(apdu)

    def atr(self) -> bytes:
        return self.link.atr()


def chip_serial_of(atr: bytes) -> bytes:
    """The chip serial: the last 8 bytes of the ATR (DESIGN §6.2)."""
    if len(atr) < 8:
        raise ValueError("ATR too short to carry a chip serial")
    return atr[-8:]


def get_challenge(link: CountingLink, size: int) -> bytes:
    data = command(link, bytes((0x00, 0x84, 0x00, 0x00, size)), "get challenge")  # type: ignore[arg-type]
    if len(data) != size:
        raise ValueError("card returned a challenge of the wrong size")
    return data


def select(link: CountingLink, name: bytes) -> None:
    command(link, bytes((0x00, 0xA4, 0x04, 0x00, len(name))) + name, "select")  # type: ignore[arg-type]


async def open_session(link: CountingLink, hsm: HsmClient, serial: bytes) -> None:
    """GET CHALLENGE 8 + EXTERNAL AUTHENTICATE 3DES(KT, R) (DESIGN §6.2 step 1)."""
    challenge = get_challenge(link, 8)
    answer = await hsm.perso_auth(serial, challenge)
    command(link, bytes.fromhex("0082000008") + answer, "external authenticate")  # type: ignore[arg-type]


async def secure_command(
    link: CountingLink, hsm: HsmClient, serial: bytes, header: bytes, data: bytes, what: str
) -> None:
    """A command with a trailing MAC4 under KT: IV = fresh GET CHALLENGE 4 ‖ 00000000; the MAC
    covers CLA INS P1 P2 Lc (Lc counting the MAC) ‖ data (reference/pboc.md §1.3)."""
    full_header = header + bytes((len(data) + 4,))
    challenge = get_challenge(link, 4)
    mac = await hsm.perso_mac(serial, challenge, full_header + data)
    command(link, full_header + data + mac, what)  # type: ignore[arg-type]


async def write_keys(
    link: CountingLink, hsm: HsmClient, serial: bytes, asn: bytes, key_version: int
) -> int:
    """WRITE KEY 84D4 00 <id> for each block the HSM exports (DESIGN §6.2 step 2)."""
    blocks = await hsm.card_keys_export(asn, serial, key_version)
    for block in blocks:
        await secure_command(
            link,
            hsm,
            serial,
            bytes((0x84, 0xD4, 0x00, block.key_id)),
            block.block,
            f"write key {block.key_id:02X}",
        )
    return len(blocks)


async def write_binary(
    link: CountingLink, hsm: HsmClient, serial: bytes, sfi: int, data: bytes
) -> None:
    """UPDATE BINARY with secure messaging 04D6 <80|SFI> 00 (DESIGN §6.2 step 3)."""
    await secure_command(
        link,
        hsm,
        serial,
        bytes((0x04, 0xD6, 0x80 | sfi, 0x00)),
        data,
        f"update binary SFI {sfi:02X}",
    )


def end_personalization(link: CountingLink) -> None:
    command(link, bytes.fromhex("80EE000000"), "end personalization")  # type: ignore[arg-type]


async def prove_load_key(
    link: CountingLink,
    hsm: HsmClient,
    *,
    asn: bytes,
    terminal_no: bytes,
    host_datetime: str,
    amount: int = 0,
) -> None:
    """INITIALIZE FOR LOAD and let the HSM check MAC1 (reference/pboc.md §4): the card holds the
    DLK the HSM derives for this ASN. No CREDIT FOR LOAD follows, so no money moves; selecting
    the application again drops the load session."""
    select(link, PURSE_AID)
    apdu = bytes.fromhex("805000020B") + b"\x01" + amount.to_bytes(4, "big") + terminal_no + b"\x10"
    data = command(link, apdu, "initialize for load")  # type: ignore[arg-type]
    balance, online_counter = int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:6], "big")
    key_version, random, mac1 = data[6], data[8:12], data[12:16]
    await hsm.load_authorize(
        asn=asn,
        key_version=key_version,
        random=random,
        online_counter=online_counter,
        balance_before=balance,
        amount=amount,
        tx_type=TX_LOAD_EP,
        terminal_no=terminal_no,
        mac1=mac1,
        host_datetime=host_datetime,
    )
    select(link, PURSE_AID)
