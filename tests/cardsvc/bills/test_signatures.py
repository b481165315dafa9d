"""Known answers of the biller protocol's signature (docs/biller-protocol.md §2.1), and the
bill-key pattern language."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardsvc.bills import patterns, signing
from cardsvc.errors import ValidationFailed
from cardsvc.hsm import HsmClient, KeyRef

KEY = bytes(range(32))
BODY = b'{"bill_key":"3100012345"}'
# Computed independently with openssl (dgst -sha256; dgst -sha256 -mac HMAC).
BODY_SHA256 = "c455098daf2efe94c33db4d3e5fb473a96cfa1dd4cd8ead4b6fcaeddc8471cc3"
SIGNATURE = "b97bd769515161c2d70fc5df5318576f342dfda86263edc0c1c824ba777a9d3e"


def test_signed_string_is_the_documented_six_lines() -> None:
    signed = signing.signed_string("POST", "/bills/query", "2026-12-02T06:00:00Z", "q-1", BODY)
    assert hashlib.sha256(BODY).hexdigest() == BODY_SHA256
    assert signed == (
        b"BILL1\nPOST\n/bills/query\n2026-12-02T06:00:00Z\nq-1\n" + BODY_SHA256.encode()
    )


async def test_hsm_signs_and_verifies_under_a_biller_key(hsm: HsmClient) -> None:
    await hsm.key_import("BILLER_KAT", "biller-mac", KEY, "HMAC-SHA256")
    signed = signing.signed_string("POST", "/bills/query", "2026-12-02T06:00:00Z", "q-1", BODY)
    assert await signing.sign(hsm, "BILLER_KAT", signed) == SIGNATURE
    assert await signing.verify(hsm, "BILLER_KAT", signed, SIGNATURE)
    assert not await signing.verify(hsm, "BILLER_KAT", signed + b" ", SIGNATURE)
    assert not await signing.verify(hsm, "NO_SUCH_KEY", signed, SIGNATURE)
    # A biller key is an HMAC key: its MAC is the whole 32 bytes, never a truncation.
    assert len(await hsm.mac_generate(KeyRef.label("BILLER_KAT"), b"x")) == 32


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        ("31[0-9]{8}", "3100012345", "3200012345"),
        ("\\d{6,10}", "123456", "12345"),
        ("G[0-9A-F]{7}", "G00000AF", "G00000AG"),
        ("[A-Z]{2}\\d{4}", "AB1234", "ab1234"),
    ],
)
def test_patterns(pattern: str, good: str, bad: str) -> None:
    assert patterns.matches(pattern, good)
    assert not patterns.matches(pattern, bad)


@pytest.mark.parametrize(
    "pattern", ["", "(a|b)", "a*", "a+", "[0-9]{0}", "\\d{40}", "[0-9]{3,2}", ".{4}", "^31$"]
)
def test_patterns_refused(pattern: str) -> None:
    with pytest.raises(ValidationFailed):
        patterns.check(pattern)


@given(st.text(max_size=40), st.text(max_size=40))
def test_a_pattern_is_refused_or_bounds_its_keys(pattern: str, key: str) -> None:
    try:
        low, high = patterns.check(pattern)
    except ValidationFailed:
        return
    assert 1 <= low <= high <= patterns.MAX_KEY_LENGTH
    if patterns.matches(pattern, key):
        assert low <= len(key) <= high
