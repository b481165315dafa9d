"""PIN cryptography: ISO 9564-1 format 0 PIN blocks and the IBM 3624 PIN offset.

The cardholder's PIN exists in clear only inside these functions, called by the HSM's command
handlers; no command answers with it. Every function is pinned by known-answer tests from public
examples (``tests/hsm_sim/test_pin_vectors.py``).

- **Format 0 (ISO 9564-1, ANSI X9.8).** ``0 ‖ L ‖ PIN ‖ F…F`` (16 nibbles, L = 4..12) XOR
  ``0000 ‖ the 12 rightmost digits of the PAN without its check digit``; the terminal encrypts the
  8 bytes under its PIN key (3DES-ECB).
- **IBM 3624 offset.** The validation data, padded on the right to 16 hex digits, is encrypted
  under the PIN verification key (PVK, 2-key 3DES); its hex digits, decimalized by a table, give
  the *natural PIN*; the stored *offset* is the PIN minus the natural PIN, digit by digit, modulo
  10. It covers PINs of any length from 4 to 12 (the VISA PVV covers only four PIN digits, and
  our residents' PINs have six). The decimalization table is fixed here and never taken from a
  caller: a table chosen by the caller turns verification into an oracle that reveals the PIN
  digit by digit.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Final

from hsm_sim import pboc

MIN_PIN_LENGTH: Final = 4
MAX_PIN_LENGTH: Final = 12
# The decimalization table of the IBM 3624 method: hex digit d → STANDARD_TABLE[d].
STANDARD_TABLE: Final = "0123456789012345"
VALIDATION_PAD: Final = "F"


class PinBlockError(ValueError):
    """A PIN block that is not format 0 for this PAN (wrong key, wrong PAN, or not format 0).

    Its message never carries a PIN digit."""


class PinPolicyError(ValueError):
    """A new PIN that the issuer refuses (length, or too easy to guess); no PIN digit in it."""


def pan_field(pan: str) -> bytes:
    """``0000`` ‖ the 12 rightmost PAN digits left of the check digit (zero-padded if fewer)."""
    if not pan.isascii() or not pan.isdigit() or not 13 <= len(pan) <= 19:
        raise PinBlockError("the PAN must be 13 to 19 digits")
    return bytes.fromhex(pan[:-1][-12:].rjust(16, "0"))


def pin_field(pin: str) -> bytes:
    if not pin.isascii() or not pin.isdigit() or not MIN_PIN_LENGTH <= len(pin) <= MAX_PIN_LENGTH:
        raise PinBlockError(f"a PIN has {MIN_PIN_LENGTH} to {MAX_PIN_LENGTH} digits")
    return bytes.fromhex(f"0{len(pin):X}{pin}".ljust(16, "F"))


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def format0_block(pin: str, pan: str) -> bytes:
    """The clear ISO 9564-1 format 0 PIN block (8 bytes)."""
    return _xor(pin_field(pin), pan_field(pan))


def format0_pin(block: bytes, pan: str) -> str:
    """The PIN in a clear format 0 block made with ``pan``; PinBlockError when it is not one."""
    if len(block) != 8:
        raise PinBlockError("a PIN block is 8 bytes")
    field = _xor(block, pan_field(pan)).hex().upper()
    length = int(field[1], 16)
    if field[0] != "0" or not MIN_PIN_LENGTH <= length <= MAX_PIN_LENGTH:
        raise PinBlockError("not a format 0 PIN block for this PAN")
    digits, fill = field[2 : 2 + length], field[2 + length :]
    if not digits.isdigit() or fill != "F" * len(fill):
        raise PinBlockError("not a format 0 PIN block for this PAN")
    return digits


def decrypt_format0(pin_key: bytes, encrypted: bytes, pan: str) -> str:
    """The PIN of a format 0 block encrypted under ``pin_key`` (3DES-ECB)."""
    if len(encrypted) != 8:
        raise PinBlockError("a PIN block is 8 bytes")
    return format0_pin(pboc.tdes_decrypt(pin_key, encrypted), pan)


def _validation_block(validation_data: str, pad: str = VALIDATION_PAD) -> bytes:
    if not 1 <= len(validation_data) <= 16:
        raise ValueError("validation data has 1 to 16 hex digits")
    try:
        return bytes.fromhex(validation_data.ljust(16, pad))
    except ValueError:
        raise ValueError("validation data must be hex digits") from None


def natural_pin(
    pvk: bytes,
    validation_data: str,
    length: int,
    table: str = STANDARD_TABLE,
    pad: str = VALIDATION_PAD,
) -> str:
    """The IBM 3624 natural PIN of ``length`` digits for this validation data."""
    if len(table) != 16 or not table.isdigit():
        raise ValueError("a decimalization table has 16 decimal digits")
    if not MIN_PIN_LENGTH <= length <= MAX_PIN_LENGTH:
        raise ValueError(f"a PIN has {MIN_PIN_LENGTH} to {MAX_PIN_LENGTH} digits")
    cipher = pboc.tdes_encrypt(pvk, _validation_block(validation_data, pad)).hex()
    return "".join(table[int(nibble, 16)] for nibble in cipher[:length])


def ibm3624_offset(
    pvk: bytes,
    validation_data: str,
    pin: str,
    table: str = STANDARD_TABLE,
    pad: str = VALIDATION_PAD,
) -> str:
    """The offset that turns the natural PIN into ``pin`` (as many digits as the PIN)."""
    pin_field(pin)  # length and digits
    natural = natural_pin(pvk, validation_data, len(pin), table, pad)
    return "".join(str((int(p) - int(n)) % 10) for p, n in zip(pin, natural, strict=True))


def ibm3624_pin(
    pvk: bytes,
    validation_data: str,
    offset: str,
    table: str = STANDARD_TABLE,
    pad: str = VALIDATION_PAD,
) -> str:
    """The PIN that ``offset`` stands for (the natural PIN plus the offset, digit by digit)."""
    if not offset.isascii() or not offset.isdigit():
        raise ValueError("an offset is decimal digits")
    natural = natural_pin(pvk, validation_data, len(offset), table, pad)
    return "".join(str((int(n) + int(o)) % 10) for n, o in zip(natural, offset, strict=True))


def verify_offset(pvk: bytes, validation_data: str, pin: str, offset: str) -> bool:
    """Whether ``pin`` is the PIN that ``offset`` stands for (compared in constant time)."""
    if len(pin) != len(offset):
        return False
    expected = ibm3624_pin(pvk, validation_data, offset)
    return pboc.mac_equal(expected.encode(), pin.encode())


def policy_refusal(pin: str, min_length: int, max_length: int) -> str | None:
    """Why the issuer refuses ``pin`` as a new PIN, or None. The reason never quotes the PIN."""
    if not min_length <= len(pin) <= max_length:
        return f"a PIN here has {min_length} to {max_length} digits"
    steps = {(int(b) - int(a)) % 10 for a, b in pairwise(pin)}
    if steps == {0}:
        return "a PIN of one repeated digit is refused"
    if steps in ({1}, {9}):
        return "a PIN of consecutive digits is refused"
    return None
