"""PBOC e-purse cryptography (reference/pboc.md §1-§4), the one module that touches DES.

Only ``hsm_sim`` and the simulated card and PSAM (``terminals/devices``) import this module:
they are the holders of keys. Every function here is pinned by known-answer tests
(``tests/hsm_sim/test_pboc_vectors.py``, reference §7).

Conventions: byte strings in, byte strings out; amounts are 4-byte big-endian fen, counters
2-byte, terminal numbers 6 bytes, dates ``YYYYMMDD`` and times ``hhmmss`` as BCD.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final

from Crypto.Cipher import DES, DES3

BLOCK: Final = 8
ZERO_IV: Final = bytes(BLOCK)


class CryptoInputError(ValueError):
    """A key or data field has the wrong length or form."""


def _check_key(key: bytes, *lengths: int) -> None:
    if len(key) not in lengths:
        raise CryptoInputError(
            f"key must be {' or '.join(map(str, lengths))} bytes, got {len(key)}"
        )


def des_encrypt(key8: bytes, block: bytes) -> bytes:
    _check_key(key8, 8)
    return bytes(DES.new(key8, DES.MODE_ECB).encrypt(block))  # noqa: S304 - PBOC cards mandate DES/3DES


def des_decrypt(key8: bytes, block: bytes) -> bytes:
    _check_key(key8, 8)
    return bytes(DES.new(key8, DES.MODE_ECB).decrypt(block))  # noqa: S304 - PBOC cards mandate DES/3DES


def tdes_encrypt(key: bytes, data: bytes) -> bytes:
    """2-key 3DES EDE in ECB mode (reference §1.1); an 8-byte key means single DES."""
    _check_key(key, 8, 16)
    if len(data) % BLOCK:
        raise CryptoInputError("3DES data must be a multiple of 8 bytes")
    if len(key) == 8:
        return des_encrypt(key, data)
    if key[:8] == key[8:]:
        # pycryptodome refuses a degenerate 3DES key; EDE with K1 == K2 is single DES.
        return des_encrypt(key[:8], data)
    return bytes(DES3.new(key, DES3.MODE_ECB).encrypt(data))


def tdes_decrypt(key: bytes, data: bytes) -> bytes:
    _check_key(key, 8, 16)
    if len(data) % BLOCK:
        raise CryptoInputError("3DES data must be a multiple of 8 bytes")
    if len(key) == 8 or key[:8] == key[8:]:
        return des_decrypt(key[:8], data)
    return bytes(DES3.new(key, DES3.MODE_ECB).decrypt(data))


def pad_iso9797_m2(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2: always ``80`` then zeros to a block boundary (§1.2)."""
    padded = data + b"\x80"
    return padded + bytes(-len(padded) % BLOCK)


def unpad_iso9797_m2(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if not stripped.endswith(b"\x80") or len(data) - len(stripped) >= BLOCK:
        raise CryptoInputError("bad ISO 9797-1 method 2 padding")
    return stripped[:-1]


def full_mac(key: bytes, data: bytes, iv: bytes = ZERO_IV) -> bytes:
    """The 8-byte PBOC MAC before truncation (§1.2).

    8-byte key: DES CBC-MAC (ISO 9797-1 algorithm 1). 16-byte key: retail MAC (algorithm 3):
    DES CBC with the left half, then decrypt with the right half and encrypt with the left.
    """
    _check_key(key, 8, 16)
    if len(iv) != BLOCK:
        raise CryptoInputError("IV must be 8 bytes")
    padded = pad_iso9797_m2(data)
    last = bytes(DES.new(key[:8], DES.MODE_CBC, iv=iv).encrypt(padded)[-BLOCK:])  # noqa: S304 - PBOC cards mandate DES/3DES
    if len(key) == 16:
        last = des_encrypt(key[:8], des_decrypt(key[8:], last))
    return last


def mac4(key: bytes, data: bytes, iv: bytes = ZERO_IV) -> bytes:
    """The 4-byte MAC sent on the wire: the leftmost 4 bytes of :func:`full_mac`."""
    return full_mac(key, data, iv)[:4]


def mac_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def complement(data: bytes) -> bytes:
    n = len(data)
    return (int.from_bytes(data, "big") ^ ((1 << (8 * n)) - 1)).to_bytes(n, "big")


def diversify(master_key: bytes, factor: bytes) -> bytes:
    """One level of diversification (§2.2): ``3DES(K, F) ‖ 3DES(K, ~F)``."""
    _check_key(master_key, 16)
    if len(factor) != 8:
        raise CryptoInputError("diversification factor must be 8 bytes")
    # Both halves in one ECB call: 3DES(K, F) ‖ 3DES(K, ~F) block by block.
    return tdes_encrypt(master_key, factor + complement(factor))


def diversify_path(master_key: bytes, *factors: bytes) -> bytes:
    """Several levels, highest first: ``div(div(K, F_group), ASN)`` (DESIGN §6)."""
    key = master_key
    for factor in factors:
        key = diversify(key, factor)
    return key


class Diversifier:
    """:func:`diversify` under one fixed key, with its cipher object kept (the TAC_VERIFY hot path).

    ECB cipher objects hold no chaining state, so one object serves every card.
    """

    __slots__ = ("_cipher",)

    def __init__(self, master_key: bytes) -> None:
        _check_key(master_key, 16)
        if master_key[:8] == master_key[8:]:
            self._cipher = DES.new(master_key[:8], DES.MODE_ECB)  # noqa: S304 - PBOC cards mandate DES/3DES
        else:
            self._cipher = DES3.new(master_key, DES3.MODE_ECB)

    def derive(self, factor: bytes) -> bytes:
        if len(factor) != 8:
            raise CryptoInputError("diversification factor must be 8 bytes")
        return bytes(self._cipher.encrypt(factor + complement(factor)))


def group_factor(city_code: str) -> bytes:
    """住建部 city group factor ``CityCode(2) ‖ FF 00 00 00 00 00`` (§2.2)."""
    if len(city_code) != 4 or not city_code.isdigit():
        raise CryptoInputError("city code must be 4 digits")
    return bytes.fromhex(city_code + "FF0000000000")


def tac_key(dtk: bytes) -> bytes:
    """TAC key = DTK left half XOR right half (§2.2)."""
    _check_key(dtk, 16)
    return (int.from_bytes(dtk[:8], "big") ^ int.from_bytes(dtk[8:], "big")).to_bytes(8, "big")


def kcv(key: bytes) -> bytes:
    """Key check value: the first 3 bytes of the key encrypting a zero block."""
    return tdes_encrypt(key, bytes(BLOCK))[:3]


def u32(value: int) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise CryptoInputError("value does not fit 4 bytes")
    return value.to_bytes(4, "big")


def u16(value: int) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise CryptoInputError("value does not fit 2 bytes")
    return value.to_bytes(2, "big")


def bcd_datetime(dt14: str) -> bytes:
    """``YYYYMMDDhhmmss`` → 7 bytes BCD (Date(4) ‖ Time(3))."""
    if len(dt14) != 14 or not dt14.isdigit():
        raise CryptoInputError("datetime must be 14 digits YYYYMMDDhhmmss")
    return bytes.fromhex(dt14)


def _terminal(terminal_no: bytes) -> bytes:
    if len(terminal_no) != 6:
        raise CryptoInputError("terminal number must be 6 bytes")
    return terminal_no


# --- purchase (§3) -----------------------------------------------------------------------


def purchase_session_key(
    dpk: bytes, random4: bytes, offline_counter: int, terminal_serial: int
) -> bytes:
    """SESPK = 3DES(DPK, Random(4) ‖ OfflineCtr(2) ‖ TermTxSerial low 2 bytes) (§2.2)."""
    if len(random4) != 4:
        raise CryptoInputError("card random must be 4 bytes")
    return tdes_encrypt(dpk, random4 + u16(offline_counter) + u32(terminal_serial)[2:])


def purchase_mac1(
    session_key: bytes,
    amount: int,
    tx_type: int,
    terminal_no: bytes,
    dt14: str,
    auth_code: bytes = b"",
) -> bytes:
    """MAC1 = MAC(SESPK, Amount ‖ TxType ‖ TermNo ‖ Date ‖ Time [‖ AuthCode]) (§3.2)."""
    data = u32(amount) + bytes([tx_type]) + _terminal(terminal_no) + bcd_datetime(dt14) + auth_code
    return mac4(session_key, data)


def purchase_mac2(session_key: bytes, amount: int) -> bytes:
    """MAC2 = MAC(SESPK, Amount) (§3.2)."""
    return mac4(session_key, u32(amount))


def purchase_tac(
    dtk: bytes, amount: int, tx_type: int, terminal_no: bytes, terminal_serial: int, dt14: str
) -> bytes:
    """TAC = MAC(DTK_L ⊕ DTK_R, Amount ‖ TxType ‖ TermNo ‖ TermTxSerial ‖ Date ‖ Time) (§3.2)."""
    data = (
        u32(amount)
        + bytes([tx_type])
        + _terminal(terminal_no)
        + u32(terminal_serial)
        + bcd_datetime(dt14)
    )
    return mac4(tac_key(dtk), data)


# --- load (§4) ---------------------------------------------------------------------------


def load_session_key(dlk: bytes, random4: bytes, online_counter: int) -> bytes:
    """SESLK = 3DES(DLK, Random(4) ‖ OnlineCtr(2) ‖ 8000) (§4)."""
    if len(random4) != 4:
        raise CryptoInputError("card random must be 4 bytes")
    return tdes_encrypt(dlk, random4 + u16(online_counter) + b"\x80\x00")


def load_mac1(
    session_key: bytes, balance_before: int, amount: int, tx_type: int, terminal_no: bytes
) -> bytes:
    """MAC1 = MAC(SESLK, BalanceBefore ‖ Amount ‖ TxType ‖ TermNo) (§4)."""
    return mac4(
        session_key, u32(balance_before) + u32(amount) + bytes([tx_type]) + _terminal(terminal_no)
    )


def load_mac2(
    session_key: bytes, amount: int, tx_type: int, terminal_no: bytes, host_dt14: str
) -> bytes:
    """MAC2 = MAC(SESLK, Amount ‖ TxType ‖ TermNo ‖ HostDate ‖ HostTime) (§4)."""
    return mac4(
        session_key,
        u32(amount) + bytes([tx_type]) + _terminal(terminal_no) + bcd_datetime(host_dt14),
    )


def load_tac(
    dtk: bytes,
    balance_after: int,
    online_counter: int,
    amount: int,
    tx_type: int,
    terminal_no: bytes,
    dt14: str,
) -> bytes:
    """TAC = MAC(DTK_L⊕DTK_R, BalAfter ‖ OnlineCtr before +1 ‖ Amount ‖ Type ‖ TermNo ‖ DT) (§4)."""
    data = (
        u32(balance_after)
        + u16(online_counter)
        + u32(amount)
        + bytes([tx_type])
        + _terminal(terminal_no)
        + bcd_datetime(dt14)
    )
    return mac4(tac_key(dtk), data)


# --- secure messaging (§1.3, DESIGN §6.2) ------------------------------------------------


def secure_messaging_iv(challenge4: bytes) -> bytes:
    """IV for secure messaging: the 4-byte GET CHALLENGE answer ‖ 00000000 (§1.3)."""
    if len(challenge4) != 4:
        raise CryptoInputError("challenge must be 4 bytes")
    return challenge4 + bytes(4)


def wrap_key_block(
    transport_key: bytes, key_id: int, version: int, algorithm: int, card_key: bytes
) -> bytes:
    """The encrypted body of WRITE KEY (DESIGN §6.2): 3DES-ECB(KT, pad(id ‖ ver ‖ alg ‖ key16))."""
    _check_key(card_key, 16)
    return tdes_encrypt(
        transport_key, pad_iso9797_m2(bytes([key_id, version, algorithm]) + card_key)
    )


def unwrap_key_block(transport_key: bytes, block: bytes) -> tuple[int, int, int, bytes]:
    plain = unpad_iso9797_m2(tdes_decrypt(transport_key, block))
    if len(plain) != 19:
        raise CryptoInputError("key block must hold id, version, algorithm and a 16-byte key")
    return plain[0], plain[1], plain[2], plain[3:]


def random_bytes(n: int) -> bytes:
    return secrets.token_bytes(n)
