"""The development key set (DESIGN §6.1) in one place, for the simulated card and PSAM only.

The HSM holds the same values in its ``--dev-keys`` set; nothing outside ``hsm_sim`` and
``terminals/devices`` may hold a key. Card keys are diversified in two levels (DESIGN §6,
reference/pboc.md §2.2): ``DxK = div(div(MxK, 3211FF0000000000), ASN)``; the transport key of a
blank card is one level: ``KT = div(MTRK, chip serial)``.
"""

from __future__ import annotations

import hashlib
from typing import Final

from hsm_sim import pboc

MPK: Final = bytes.fromhex("80A1CC06DFB20A9193B343196DA97098")
MLK: Final = bytes.fromhex("073CD5EC365EBE9396B3E2F44FCCCEF4")
MTK: Final = bytes.fromhex("A7AE835B507148C5EBF6D7AC59C0CE2E")
MAMK: Final = bytes.fromhex("6BD8155E61D637E8BAF89DD93B30BD72")
MTRK: Final = bytes.fromhex("FE2F5357B2A2E8DFFF8A3837538F6B66")
MTMK: Final = bytes.fromhex("7DEBF72ABCE791A8C22495E64A6A93C8")
MSSK: Final = bytes.fromhex("BFE0AE9AAF5516B3D72734EFFE949952")

# The demo bank's credit-notification key (HMAC-SHA256), which the HSM holds as BANK_DEMO: the
# simulated bank signs with it as a real bank signs with its copy.
BANK_DEMO: Final = bytes.fromhex(
    hashlib.sha256(b"hsm-sim development key BANK_DEMO").hexdigest()[:64]
)

KEY_VERSION: Final = 0x01
ALGORITHM_3DES: Final = 0x00
CITY_CODE: Final = "3211"
GROUP_FACTOR: Final = pboc.group_factor(CITY_CODE)  # 3211FF0000000000

# WRITE KEY key ids (DESIGN §6.2) and the master each card key comes from.
KEY_DAMK: Final = 0x01
KEY_DPK: Final = 0x02
KEY_DLK: Final = 0x03
KEY_DTK: Final = 0x04
KEY_DPUK: Final = 0x05
KEY_DRPK: Final = 0x06
KEY_SS: Final = 0x10

# DPUK/DRPK (PIN unblock/reload) come from the maintenance master: the dev set has no separate
# masters for them.
MASTER_FOR_KEY_ID: Final[dict[int, bytes]] = {
    KEY_DAMK: MAMK,
    KEY_DPK: MPK,
    KEY_DLK: MLK,
    KEY_DTK: MTK,
    KEY_DPUK: MAMK,
    KEY_DRPK: MAMK,
    KEY_SS: MSSK,
}


def asn_from_card_no(card_no: str) -> bytes:
    """The ASN is the 16-digit card number in BCD, 8 bytes (DESIGN §5)."""
    if len(card_no) != 16 or not card_no.isdigit():
        raise ValueError("card number must be 16 digits")
    return bytes.fromhex(card_no)


def card_key(master: bytes, asn: bytes, group_factor: bytes = GROUP_FACTOR) -> bytes:
    """``div(div(MxK, group factor), ASN)`` (DESIGN §6)."""
    return pboc.diversify_path(master, group_factor, asn)


def card_keys(asn: bytes, group_factor: bytes = GROUP_FACTOR) -> dict[int, bytes]:
    """Every card key by WRITE KEY id, as the HSM would export them for this ASN."""
    return {
        key_id: card_key(master, asn, group_factor) for key_id, master in MASTER_FOR_KEY_ID.items()
    }


def transport_key(chip_serial: bytes) -> bytes:
    """``KT = div(MTRK, chip serial)`` (DESIGN §6.2)."""
    return pboc.diversify(MTRK, chip_serial)
