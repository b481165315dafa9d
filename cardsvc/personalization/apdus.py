"""The personalization commands of our card OS (DESIGN §6.2) as bytes, and the plan the server
walks through with the card.

Nothing here talks to the card or the HSM: the session service (``service.py``) fills the
cryptograms in with the HSM and hands the commands to whoever holds the card (the counter agent,
or the in-process link of the development shortcut).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cardsvc.reader.purse import PURSE_AID, SS_NAME

TX_LOAD_EP: Final = 0x02
END_PERSONALIZATION: Final = bytes.fromhex("80EE000000")
# WRITE KEY ids (DESIGN §6.2): 01 DAMK, 02 DPK, 03 DLK, 04 DTK, 05 DPUK, 06 DRPK, 10 SS-app key.
KEY_IDS: Final = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10)


def chip_serial_of(atr: bytes) -> bytes:
    """The chip serial: the last 8 bytes of the ATR (DESIGN §6.2)."""
    if len(atr) < 8:
        raise ValueError("ATR too short to carry a chip serial")
    return atr[-8:]


def get_challenge(size: int) -> bytes:
    return bytes((0x00, 0x84, 0x00, 0x00, size))


def select(name: bytes) -> bytes:
    return bytes((0x00, 0xA4, 0x04, 0x00, len(name))) + name


def external_authenticate(answer: bytes) -> bytes:
    """EXTERNAL AUTHENTICATE with 3DES(KT, R), R the 8-byte challenge (DESIGN §6.2 step 1)."""
    return bytes.fromhex("0082000008") + answer


def secure_header(cla_ins_p1_p2: bytes, data: bytes) -> bytes:
    """The header a secure-messaging MAC covers: Lc counts the 4-byte MAC (reference §1.3)."""
    return cla_ins_p1_p2 + bytes((len(data) + 4,))


def write_key_header(key_id: int, block: bytes) -> bytes:
    return secure_header(bytes((0x84, 0xD4, 0x00, key_id)), block)


def update_binary_header(sfi: int, data: bytes) -> bytes:
    return secure_header(bytes((0x04, 0xD6, 0x80 | sfi, 0x00)), data)


def initialize_for_load(terminal_no: bytes, amount: int = 0) -> bytes:
    """INITIALIZE FOR LOAD (reference §4), key index 01; with amount 0 and no CREDIT FOR LOAD
    after it, no money moves: it only makes the card show MAC1 under its DLK."""
    return bytes.fromhex("805000020B") + b"\x01" + amount.to_bytes(4, "big") + terminal_no + b"\x10"


@dataclass(frozen=True, slots=True)
class LoadInit:
    balance: int
    online_counter: int
    key_version: int
    random: bytes
    mac1: bytes

    @classmethod
    def parse(cls, data: bytes) -> LoadInit:
        if len(data) != 16:
            raise ValueError("INITIALIZE FOR LOAD answered with the wrong length")
        return cls(
            balance=int.from_bytes(data[0:4], "big"),
            online_counter=int.from_bytes(data[4:6], "big"),
            key_version=data[6],
            random=data[8:12],
            mac1=data[12:16],
        )


class OpKind(StrEnum):
    plain = "plain"  # a fixed command
    auth = "auth"  # needs an 8-byte challenge: EXTERNAL AUTHENTICATE
    key = "key"  # needs a 4-byte challenge: WRITE KEY with secure messaging
    file = "file"  # needs a 4-byte challenge: UPDATE BINARY with secure messaging
    end = "end"  # END PERSONALIZATION
    proof = "proof"  # INITIALIZE FOR LOAD: the HSM checks the card's MAC1


@dataclass(frozen=True, slots=True)
class Op:
    kind: OpKind
    what: str  # said to the clerk and in errors
    arg: int = 0  # key id or SFI
    apdu: bytes = b""  # the command of a plain op

    @property
    def challenge_size(self) -> int:
        return {OpKind.auth: 8, OpKind.key: 4, OpKind.file: 4}.get(self.kind, 0)


_SELECT_PURSE = Op(OpKind.plain, "select the purse application", apdu=select(PURSE_AID))

PLAN: Final[tuple[Op, ...]] = (
    Op(OpKind.auth, "open the personalization session"),
    *(Op(OpKind.key, f"write key {key_id:02X}", key_id) for key_id in KEY_IDS),
    _SELECT_PURSE,
    Op(OpKind.file, "write file 0015", 0x15),
    Op(OpKind.file, "write file 0016", 0x16),
    Op(OpKind.plain, "select the social-security application", apdu=select(SS_NAME)),
    Op(OpKind.file, "write file EF05", 0x05),
    Op(OpKind.file, "write file EF06", 0x06),
    Op(OpKind.end, "end personalization", apdu=END_PERSONALIZATION),
    _SELECT_PURSE,
    Op(OpKind.proof, "prove the load key"),
    _SELECT_PURSE,  # drops the load session the proof opened
)
AUTH_OP: Final = 0
LAST_KEY_OP: Final = len(KEY_IDS)
END_OP: Final = next(i for i, op in enumerate(PLAN) if op.kind is OpKind.end)
PROOF_FROM: Final = END_OP + 1  # where a session resumes once the transport key is gone
PROOF_OP: Final = next(i for i, op in enumerate(PLAN) if op.kind is OpKind.proof)
CHALLENGE: Final = -1  # the op number of a GET CHALLENGE in a batch
