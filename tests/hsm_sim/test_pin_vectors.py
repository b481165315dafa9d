"""Known-answer tests of the PIN cryptography (hsm_sim/pin.py) from public examples.

- ISO 9564-1 format 0: the worked example of the ID TECH PIN block page (PAN 43219876543210987,
  PIN 1234 → 0412AC89ABCDEF67) and IBM's ANSI X9.8 example (PAN 4000001234562, PIN 92389 →
  0592789FFFEDCBA9).
- IBM 3624 offset: the vectors of the open-source ``psec`` library's test suite (PVK
  0123456789ABCDEFFEDCBA9876543210, decimalization table 1234567890123456, validation data from
  1122334455667788), which agree with IBM's description of the method.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsm_sim import pboc
from hsm_sim import pin as pins

H = bytes.fromhex
PVK = H("0123456789ABCDEFFEDCBA9876543210")
PSEC_TABLE = "1234567890123456"
PSEC_DATA = "1122334455667788"


@pytest.mark.parametrize(
    ("pan", "pin", "block"),
    [
        ("43219876543210987", "1234", "0412AC89ABCDEF67"),
        ("4000001234562", "92389", "0592789FFFEDCBA9"),
    ],
)
def test_format0_public_examples(pan: str, pin: str, block: str) -> None:
    assert pins.format0_block(pin, pan).hex().upper() == block
    assert pins.format0_pin(H(block), pan) == pin


def test_format0_fields() -> None:
    assert pins.pin_field("1234").hex().upper() == "041234FFFFFFFFFF"
    assert pins.pan_field("43219876543210987").hex().upper() == "0000987654321098"
    # Fewer than 12 digits left of the check digit are padded on the left with zeros.
    assert pins.pan_field("4000001234562").hex().upper() == "0000400000123456"
    assert pins.pin_field("123456789012").hex().upper() == "0C123456789012FF"


@pytest.mark.parametrize(
    "block",
    [
        "1412AC89ABCDEF67",  # format 1 nibble
        "0312AC89ABCDEF67",  # length 3
        "0D12AC89ABCDEF67",  # length 13
        "0412AC89ABCDEF66",  # a fill nibble that is not F
        "04A2AC89ABCDEF67",  # a PIN digit that is not decimal
    ],
)
def test_format0_refuses_what_is_not_a_block_for_this_pan(block: str) -> None:
    with pytest.raises(pins.PinBlockError) as caught:
        pins.format0_pin(H(block), "43219876543210987")
    assert "1234" not in str(caught.value)


def test_format0_with_another_pan_is_not_a_block() -> None:
    block = pins.format0_block("1234", "43219876543210987")
    with pytest.raises(pins.PinBlockError):
        pins.format0_pin(block, "43219876543210995")


@pytest.mark.parametrize(
    ("offset", "validation", "pad", "natural_or_pin"),
    [
        ("0000", PSEC_DATA, "F", "4524"),
        ("1111", PSEC_DATA, "F", "5635"),
        ("6586", PSEC_DATA, "F", "0000"),
        ("7697", PSEC_DATA, "F", "1111"),
        ("7710", PSEC_DATA, "F", "1234"),
        ("0000", PSEC_DATA[:14], "F", "5518"),
        ("0000", PSEC_DATA[1:15], "1", "3675"),
        ("0000", PSEC_DATA[2:16], "1", "5550"),
    ],
)
def test_ibm3624_public_vectors(
    offset: str, validation: str, pad: str, natural_or_pin: str
) -> None:
    assert pins.ibm3624_pin(PVK, validation, offset, PSEC_TABLE, pad) == natural_or_pin
    assert pins.ibm3624_offset(PVK, validation, natural_or_pin, PSEC_TABLE, pad) == offset


def test_ibm3624_standard_table() -> None:
    # The same encryption, decimalized by the standard table 0123456789012345 instead of psec's
    # 1234567890123456: every digit of the natural PIN is one less.
    cipher = pboc.tdes_encrypt(PVK, H(PSEC_DATA)).hex().upper()
    assert pins.natural_pin(PVK, PSEC_DATA, 12) == "".join(
        pins.STANDARD_TABLE[int(c, 16)] for c in cipher[:12]
    )
    assert pins.natural_pin(PVK, PSEC_DATA, 4, PSEC_TABLE) == "4524"
    assert pins.natural_pin(PVK, PSEC_DATA, 4) == "3413"


@given(
    pin=st.text("0123456789", min_size=4, max_size=12),
    validation=st.text("0123456789", min_size=1, max_size=16),
)
def test_offset_round_trip(pin: str, validation: str) -> None:
    offset = pins.ibm3624_offset(PVK, validation, pin)
    assert len(offset) == len(pin)
    assert pins.verify_offset(PVK, validation, pin, offset)
    other = pin[:-1] + str((int(pin[-1]) + 1) % 10)
    assert not pins.verify_offset(PVK, validation, other, offset)
    assert not pins.verify_offset(PVK, validation, pin + "0", offset)


@given(pin=st.text("0123456789", min_size=4, max_size=12))
def test_format0_round_trip(pin: str) -> None:
    pan = "3211000000000017"
    key = H("0123456789ABCDEFFEDCBA9876543210")
    encrypted = pboc.tdes_encrypt(key, pins.format0_block(pin, pan))
    assert pins.decrypt_format0(key, encrypted, pan) == pin


@pytest.mark.parametrize(
    ("pin", "refused"),
    [
        ("482915", False),
        ("111111", True),
        ("123456", True),
        ("654321", True),
        ("890123", True),  # consecutive, wrapping past 9
        ("1234", True),  # too short for a policy of six
        ("4829150", True),  # too long
    ],
)
def test_policy(pin: str, refused: bool) -> None:
    reason = pins.policy_refusal(pin, 6, 6)
    assert (reason is not None) is refused
    assert reason is None or pin not in reason
