"""The HSM contract (hsm_contract.md), run over the in-process and the TCP backend alike.

Expected values are computed independently from the clear development keys (tests/hsm_sim/cards.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from cardsvc.hsm import (
    HsmClient,
    HsmError,
    HsmKeyError,
    HsmMacInvalid,
    HsmPinBlockInvalid,
    HsmPinPolicy,
    KeyRef,
    PinKeyRef,
    PinOffset,
)
from hsm_sim import pboc
from hsm_sim import pin as pins
from hsm_sim.keystore import DEV_KEYS

from .cards import GROUP, MASTERS, card_key, load_record, purchase_record, random_asn

H = bytes.fromhex
TERMINAL = H("000001000050")


async def test_ping_and_key_info(hsm_client: HsmClient) -> None:
    await hsm_client.ping()
    info = await hsm_client.key_info("MTK")
    assert (info.label, info.version, info.usage, info.algorithm, info.state) == (
        "MTK",
        1,
        "tac-master",
        "3DES",
        "active",
    )
    assert info.kcv == pboc.kcv(MASTERS["MTK"]).hex().upper()
    with pytest.raises(HsmKeyError) as caught:
        await hsm_client.key_info("NO_SUCH_KEY")
    assert caught.value.code == "KEY_NOT_FOUND"


async def test_tac_verify_random_cards_and_altered_fields(hsm_client: HsmClient) -> None:
    rng = random.Random(20240601)
    records = [purchase_record(rng) for _ in range(20)] + [load_record(rng) for _ in range(20)]
    result = await hsm_client.tac_verify(records)
    assert result.results == [True] * 40
    assert result.errors == {}

    # One field changed at a time: each such record must fail, and only it.
    changes: dict[str, Callable[[dict[str, Any]], Any]] = {
        "amount": lambda r: r["amount"] + 1,
        "terminal_no": lambda r: (
            "00" + r["terminal_no"][2:]
            if r["terminal_no"][:2] != "00"
            else "11" + r["terminal_no"][2:]
        ),
        "datetime": lambda r: r["datetime"][:-1] + ("1" if r["datetime"][-1] != "1" else "2"),
        "asn": lambda r: r["asn"][:-1] + ("1" if r["asn"][-1] != "1" else "2"),
        "tac": lambda r: f"{int(r['tac'], 16) ^ 1:08X}",
    }
    altered = []
    for name, change in changes.items():
        for source in (records[0], records[25]):
            record = dict(source)
            record[name] = change(record)
            altered.append(record)
    purchase = dict(records[1])
    purchase["terminal_serial"] += 1
    load = dict(records[21])
    load["balance_after"] += 1
    load2 = dict(records[22])
    load2["online_counter"] = (load2["online_counter"] + 1) % 0xFFFF
    altered += [purchase, load, load2]
    result = await hsm_client.tac_verify(altered)
    assert result.results == [False] * len(altered)
    assert result.errors == {}


async def test_tac_verify_bad_fields_are_false_with_reasons(hsm_client: HsmClient) -> None:
    rng = random.Random(7)
    good = purchase_record(rng)
    bad_asn = {**good, "asn": "XYZ"}
    missing = {k: v for k, v in good.items() if k != "tac"}
    bad_type = {**good, "amount": "100"}
    bad_kind = {**good, "kind": "refund"}
    bad_version = {**good, "key_version": 9}
    wrong_tx = {**good, "tx_type": 2}
    result = await hsm_client.tac_verify(
        [good, bad_asn, missing, bad_type, bad_kind, bad_version, wrong_tx]
    )
    assert result.results == [True, False, False, False, False, False, False]
    assert set(result.errors) == {1, 2, 3, 4, 5, 6}
    assert "asn" in result.errors[1]
    assert "tac" in result.errors[2]
    assert "amount" in result.errors[3]
    assert "key_version" in result.errors[5]


async def test_tac_verify_large_batch(hsm_client: HsmClient) -> None:
    # Above the parallel threshold: exercises the worker processes on the TCP server.
    rng = random.Random(3)
    cards = [random_asn(rng) for _ in range(50)]
    records = [purchase_record(rng, rng.choice(cards)) for _ in range(1500)]
    records[700] = {**records[700], "amount": records[700]["amount"] + 1}
    records[1200] = {**records[1200], "datetime": "2024"}
    result = await hsm_client.tac_verify(records)
    expected = [True] * 1500
    expected[700] = expected[1200] = False
    assert result.results == expected
    assert list(result.errors) == [1200]


async def test_load_authorize(hsm_client: HsmClient) -> None:
    rng = random.Random(11)
    asn = random_asn(rng)
    random4, counter, balance, amount = rng.randbytes(4), 17, 5000, 10_000
    session = pboc.load_session_key(card_key("MLK", asn), random4, counter)
    mac1 = pboc.load_mac1(session, balance, amount, 2, TERMINAL)
    fields = {
        "asn": asn,
        "key_version": 1,
        "random": random4,
        "online_counter": counter,
        "balance_before": balance,
        "amount": amount,
        "tx_type": 2,
        "terminal_no": TERMINAL,
        "host_datetime": "20250102030405",
    }
    mac2 = await hsm_client.load_authorize(mac1=mac1, **fields)  # type: ignore[arg-type]
    assert mac2 == pboc.load_mac2(session, amount, 2, TERMINAL, "20250102030405")
    wrong = bytes([mac1[0] ^ 0x80]) + mac1[1:]
    with pytest.raises(HsmMacInvalid):
        await hsm_client.load_authorize(mac1=wrong, **fields)  # type: ignore[arg-type]
    with pytest.raises(HsmMacInvalid):
        await hsm_client.load_authorize(mac1=mac1, **{**fields, "amount": amount + 1})  # type: ignore[arg-type]


async def test_purchase_mac1(hsm_client: HsmClient) -> None:
    asn, random4 = H("3211000000000013"), H("01020304")
    session = pboc.purchase_session_key(card_key("MPK", asn), random4, 4, 77)
    mac1 = await hsm_client.purchase_mac1(
        asn=asn,
        key_version=1,
        random=random4,
        offline_counter=4,
        terminal_serial=77,
        amount=250,
        tx_type=6,
        terminal_no=TERMINAL,
        datetime14="20250101120000",
    )
    assert mac1 == pboc.purchase_mac1(session, 250, 6, TERMINAL, "20250101120000")


async def test_card_keys_export_and_perso(hsm_client: HsmClient) -> None:
    asn, chip = H("3211000000000013"), H("0102030405060708")
    transport = pboc.diversify(MASTERS["MTRK"], chip)
    blocks = await hsm_client.card_keys_export(asn, chip)
    by_id = {}
    for block in blocks:
        key_id, version, algorithm, key = pboc.unwrap_key_block(transport, block.block)
        assert (key_id, version, algorithm) == (block.key_id, 1, 0)
        assert block.kcv == pboc.kcv(key)
        by_id[key_id] = key
    assert sorted(by_id) == [1, 2, 3, 4, 5, 6, 0x10]
    assert by_id[1] == card_key("MAMK", asn)
    assert by_id[2] == card_key("MPK", asn)
    assert by_id[3] == card_key("MLK", asn)
    assert by_id[4] == card_key("MTK", asn)
    assert by_id[0x10] == card_key("MSSK", asn)
    assert by_id[5] == pboc.diversify(by_id[1], H("0500000000000000"))
    challenge = H("1122334455667788")
    assert await hsm_client.perso_auth(chip, challenge) == pboc.tdes_encrypt(transport, challenge)
    data = H("04D6950024") + bytes(30)
    mac = await hsm_client.perso_mac(chip, H("A1B2C3D4"), data)
    assert mac == pboc.mac4(transport, data, H("A1B2C3D400000000"))


async def test_purse_lock_commands(hsm_client: HsmClient) -> None:
    asn, challenge = H("3211000000000013"), H("A1B2C3D4")
    damk = card_key("MAMK", asn)
    iv = pboc.secure_messaging_iv(challenge)
    for action, header in [
        ("block", "841E000004"),
        ("block_permanently", "841E000104"),
        ("unblock", "8418000004"),
    ]:
        command = await hsm_client.purse_lock_command(asn, 1, action, challenge)
        assert command == H(header) + pboc.mac4(damk, H(header), iv)
    # Known answer (DESIGN §6.1 development keys), so the derivation cannot drift unnoticed.
    assert damk == H("7099F699049B548EEEC88FB39B7D0FFA")
    assert await hsm_client.purse_lock_command(asn, 1, "block", challenge) == H(
        "841E0000044877A793"
    )
    with pytest.raises(HsmError) as caught:
        await hsm_client.purse_lock_command(asn, 1, "update binary", challenge)
    assert caught.value.code == "BAD_REQUEST"


async def test_terminal_session_and_macs(hsm_client: HsmClient) -> None:
    tmk = pboc.diversify(MASTERS["MTMK"], b"\x00\x00" + TERMINAL)
    session = await hsm_client.terminal_session_open(TERMINAL)
    clear = pboc.tdes_decrypt(tmk, session.key_under_tmk)
    assert session.kcv == pboc.kcv(clear)
    message = b'{"terminal":"000001000050","seq":1}'
    ref = KeyRef.session(session.key_under_lmk)
    mac = await hsm_client.mac_generate(ref, message)
    assert mac == pboc.full_mac(clear, message)
    assert len(mac) == 8
    assert await hsm_client.mac_verify(ref, message, mac)
    assert not await hsm_client.mac_verify(ref, message + b" ", mac)
    tampered = bytearray(session.key_under_lmk)
    tampered[5] ^= 1
    with pytest.raises(HsmError) as caught:
        await hsm_client.mac_generate(KeyRef.session(bytes(tampered)), message)
    assert caught.value.code == "BLOB_INVALID"

    tmk_mac = await hsm_client.mac_generate(KeyRef.terminal_master(TERMINAL), message)
    assert tmk_mac == pboc.full_mac(tmk, message)
    assert await hsm_client.mac_verify(KeyRef.terminal_master(TERMINAL), message, tmk_mac)


async def test_file_mac_and_usage_enforcement(hsm_client: HsmClient) -> None:
    manifest = b"settlement manifest 20250101"
    mac = await hsm_client.mac_generate(KeyRef.label("FILE_MAC"), manifest)
    assert await hsm_client.mac_verify(KeyRef.label("FILE_MAC"), manifest, mac)
    # A TAC key cannot sign a file, nor a PII key compute a MAC, nor a MAC key encrypt.
    for label in ("MTK", "PII"):
        with pytest.raises(HsmKeyError) as caught:
            await hsm_client.mac_generate(KeyRef.label(label), manifest)
        assert caught.value.code == "KEY_USAGE"
    with pytest.raises(HsmKeyError) as caught:
        await hsm_client.data_encrypt("FILE_MAC", b"x")
    assert caught.value.code == "KEY_USAGE"
    with pytest.raises(HsmKeyError) as caught:
        await hsm_client.data_index("PII", b"x")
    assert caught.value.code == "KEY_USAGE"


async def test_pii_encrypt_decrypt_index(hsm_client: HsmClient) -> None:
    resident_id = b"11010519491231002X"
    first = await hsm_client.data_encrypt("PII", resident_id)
    second = await hsm_client.data_encrypt("PII", resident_id)
    assert first != second
    assert resident_id not in first
    assert len(first) == 12 + len(resident_id) + 16
    assert await hsm_client.data_decrypt("PII", first) == resident_id
    tampered = first[:-1] + bytes([first[-1] ^ 1])
    with pytest.raises(HsmError) as caught:
        await hsm_client.data_decrypt("PII", tampered)
    assert caught.value.code == "DECRYPT_FAILED"
    index = await hsm_client.data_index("PII_INDEX", resident_id)
    assert len(index) == 32
    assert index == await hsm_client.data_index("PII_INDEX", resident_id)
    assert index != await hsm_client.data_index("PII_INDEX", b"110105194912310021")


async def test_audit_head_advances(hsm_client: HsmClient) -> None:
    before = await hsm_client.audit_head()
    await hsm_client.ping()
    after = await hsm_client.audit_head()
    assert after.seq >= before.seq + 2  # the first AUDIT_HEAD and the PING
    assert after.hash != before.hash
    assert len(after.hash) == 64


async def test_group_factor_is_the_dev_city(hsm_client: HsmClient) -> None:
    # A card key diversified with another city's factor must not verify.
    rng = random.Random(5)
    asn = random_asn(rng)
    record = purchase_record(rng, asn)
    other = pboc.diversify(pboc.diversify(MASTERS["MTK"], pboc.group_factor("3100")), asn)
    dt, term = record["datetime"], H(record["terminal_no"])
    forged = pboc.purchase_tac(
        other, record["amount"], record["tx_type"], term, record["terminal_serial"], dt
    )
    result = await hsm_client.tac_verify([record, {**record, "tac": forged.hex()}])
    assert result.results == [True, False]
    assert pboc.group_factor("3211") == GROUP


async def test_key_generate_rotate_and_verify_only(fresh_hsm_client: HsmClient) -> None:
    client = fresh_hsm_client
    created = await client.key_generate("FILE_MAC_2", "file-mac")
    assert (created.version, created.state, created.usage) == (1, "active", "file-mac")
    with pytest.raises(HsmKeyError) as caught:
        await client.key_generate("FILE_MAC_2", "file-mac")
    assert caught.value.code == "KEY_EXISTS"
    with pytest.raises(HsmError) as bad:
        await client.key_generate("X1", "tac-master", "AES-256")
    assert bad.value.code == "BAD_REQUEST"

    rng = random.Random(99)
    asn = random_asn(rng)
    v1_record = purchase_record(rng, asn)
    rotated = await client.key_rotate("MTK")
    assert (rotated.version, rotated.state) == (2, "active")
    old = await client.key_info("MTK", 1)
    assert old.state == "verify-only"
    assert (await client.key_info("MTK")).version == 2
    # key_version 1 still verifies...
    assert (await client.tac_verify([v1_record])).results == [True]

    # ...but a verify-only master cannot generate: rotate MLK and ask for MAC2 under version 1.
    await client.key_rotate("MLK")
    random4 = rng.randbytes(4)
    session = pboc.load_session_key(card_key("MLK", asn), random4, 0)
    mac1 = pboc.load_mac1(session, 0, 100, 2, TERMINAL)
    with pytest.raises(HsmKeyError) as caught:
        await client.load_authorize(
            asn=asn,
            key_version=1,
            random=random4,
            online_counter=0,
            balance_before=0,
            amount=100,
            tx_type=2,
            terminal_no=TERMINAL,
            mac1=mac1,
            host_datetime="20250101000000",
        )
    assert caught.value.code == "KEY_STATE"
    with pytest.raises(HsmKeyError):
        await client.card_keys_export(asn, H("0102030405060708"), key_version=1)
    for label in ("MAMK", "MPK", "MSSK"):  # a key set of version 2 needs every card master at v2
        await client.key_rotate(label)
    blocks = await client.card_keys_export(asn, H("0102030405060708"), key_version=2)
    assert {b.version for b in blocks} == {2}


DEV = {label: H(value) for label, _usage, value in DEV_KEYS}
PAN = "3211000000000017"
ACCOUNT = "32110000001798"


async def test_terminal_session_pin_key(hsm_client: HsmClient) -> None:
    """The PIN key comes under the TMK with its KCV, differs from the MAC key, and its blob
    never works as a MAC key (nor the MAC key's as a PIN key)."""
    tmk = pboc.diversify(MASTERS["MTMK"], b"\x00\x00" + TERMINAL)
    session = await hsm_client.terminal_session_open(TERMINAL)
    pin_key = pboc.tdes_decrypt(tmk, session.pin_key_under_tmk)
    assert session.pin_kcv == pboc.kcv(pin_key)
    assert pin_key != pboc.tdes_decrypt(tmk, session.key_under_tmk)
    with pytest.raises(HsmError) as caught:
        await hsm_client.mac_generate(KeyRef.session(session.pin_key_under_lmk), b"x")
    assert caught.value.code == "BLOB_INVALID"
    block = pboc.tdes_encrypt(pin_key, pins.format0_block("482915", PAN))
    with pytest.raises(HsmError) as caught:
        await hsm_client.pin_offset_generate(
            PinKeyRef(session.key_under_lmk), block, pan=PAN, validation_data=ACCOUNT,
            min_length=6, max_length=6,
        )  # fmt: skip
    assert caught.value.code == "BLOB_INVALID"


async def test_pin_offset_and_verify(hsm_client: HsmClient) -> None:
    tmk = pboc.diversify(MASTERS["MTMK"], b"\x00\x00" + TERMINAL)
    session = await hsm_client.terminal_session_open(TERMINAL)
    pin_key = pboc.tdes_decrypt(tmk, session.pin_key_under_tmk)
    key = PinKeyRef(session.pin_key_under_lmk)

    def block(pin: str, pan: str = PAN) -> bytes:
        return pboc.tdes_encrypt(pin_key, pins.format0_block(pin, pan))

    made = await hsm_client.pin_offset_generate(
        key, block("482915"), pan=PAN, validation_data=ACCOUNT, min_length=6, max_length=6
    )
    # Computed independently from the clear development PVK.
    assert made == PinOffset(pins.ibm3624_offset(DEV["PVK"], ACCOUNT, "482915"), 1)
    ok = await hsm_client.pin_verify(
        key, block("482915"), pan=PAN, validation_data=ACCOUNT, stored=made
    )
    assert ok
    for wrong in ("482916", "48291", "4829150"):
        assert not await hsm_client.pin_verify(
            key, block(wrong), pan=PAN, validation_data=ACCOUNT, stored=made
        )
    # The same PIN under another account's validation data does not verify.
    assert not await hsm_client.pin_verify(
        key, block("482915"), pan=PAN, validation_data="32110000002727", stored=made
    )
    # A block made for another card, or under another key, is not a format 0 block here.
    with pytest.raises(HsmPinBlockInvalid):
        await hsm_client.pin_verify(
            key, block("482915", "3211000000000025"), pan=PAN, validation_data=ACCOUNT,
            stored=made,
        )  # fmt: skip
    with pytest.raises(HsmPinBlockInvalid):
        await hsm_client.pin_verify(
            key, H("0123456789ABCDEF"), pan=PAN, validation_data=ACCOUNT, stored=made
        )
    for weak in ("111111", "123456", "1234"):
        with pytest.raises(HsmPinPolicy) as refused:
            await hsm_client.pin_offset_generate(
                key, block(weak), pan=PAN, validation_data=ACCOUNT, min_length=6, max_length=6
            )
        assert weak not in refused.value.message


async def test_bank_keys_verify_only(hsm_client: HsmClient) -> None:
    import hashlib
    import hmac

    body = b'{"bank_reference":"B1","amount":100}'
    signature = hmac.new(DEV["BANK_DEMO"], body, hashlib.sha256).digest()
    assert await hsm_client.mac_verify(KeyRef.label("BANK_DEMO"), body, signature)
    assert not await hsm_client.mac_verify(KeyRef.label("BANK_DEMO"), body + b" ", signature)
    with pytest.raises(HsmKeyError) as caught:
        await hsm_client.mac_generate(KeyRef.label("BANK_DEMO"), body)
    assert caught.value.code == "KEY_USAGE"
    with pytest.raises(HsmError) as bad:
        await hsm_client.mac_verify(KeyRef.label("BANK_DEMO"), body, signature[:8])
    assert bad.value.code == "BAD_REQUEST"
    for label in ("PVK", "PII"):
        with pytest.raises(HsmKeyError) as caught:
            await hsm_client.mac_verify(KeyRef.label(label), body, signature[:8])
        assert caught.value.code == "KEY_USAGE"
