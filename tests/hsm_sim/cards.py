"""Independent computations from the clear development keys (DESIGN §6.1), for checking the HSM."""

from __future__ import annotations

import random
from typing import Any

from hsm_sim import pboc

H = bytes.fromhex
MASTERS = {
    "MPK": H("80A1CC06DFB20A9193B343196DA97098"),
    "MLK": H("073CD5EC365EBE9396B3E2F44FCCCEF4"),
    "MTK": H("A7AE835B507148C5EBF6D7AC59C0CE2E"),
    "MAMK": H("6BD8155E61D637E8BAF89DD93B30BD72"),
    "MTRK": H("FE2F5357B2A2E8DFFF8A3837538F6B66"),
    "MTMK": H("7DEBF72ABCE791A8C22495E64A6A93C8"),
    "MSSK": H("BFE0AE9AAF5516B3D72734EFFE949952"),
}
GROUP = H("3211FF0000000000")


def card_key(master: str, asn: bytes) -> bytes:
    # DESIGN §6: DxK = div(div(MxK, 3211FF0000000000), ASN), written out level by level.
    level1 = pboc.tdes_encrypt(MASTERS[master], GROUP) + pboc.tdes_encrypt(
        MASTERS[master], pboc.complement(GROUP)
    )
    return pboc.tdes_encrypt(level1, asn) + pboc.tdes_encrypt(level1, pboc.complement(asn))


def random_asn(rng: random.Random) -> bytes:
    return H(f"3211{rng.randrange(10**12):012d}")


def purchase_record(rng: random.Random, asn: bytes | None = None) -> dict[str, Any]:
    asn = asn or random_asn(rng)
    terminal = H(f"{rng.randrange(10**12):012d}")
    amount, serial = rng.randrange(1, 100_000), rng.randrange(1 << 32)
    day = f"2024{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
    dt = f"{day}{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
    tx_type = rng.choice([6, 9])
    tac = pboc.purchase_tac(card_key("MTK", asn), amount, tx_type, terminal, serial, dt)
    return {
        "kind": "purchase",
        "asn": asn.hex().upper(),
        "key_version": 1,
        "amount": amount,
        "tx_type": tx_type,
        "terminal_no": terminal.hex().upper(),
        "terminal_serial": serial,
        "datetime": dt,
        "tac": tac.hex().upper(),
    }


def load_record(rng: random.Random, asn: bytes | None = None) -> dict[str, Any]:
    asn = asn or random_asn(rng)
    terminal = H(f"{rng.randrange(10**12):012d}")
    amount, balance_after, counter = (
        rng.randrange(1, 50_000),
        rng.randrange(50_000, 100_000),
        rng.randrange(0xFFFF),
    )
    dt = f"2025{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}101010"
    tac = pboc.load_tac(card_key("MTK", asn), balance_after, counter, amount, 2, terminal, dt)
    return {
        "kind": "load",
        "asn": asn.hex().upper(),
        "key_version": 1,
        "amount": amount,
        "tx_type": 2,
        "terminal_no": terminal.hex().upper(),
        "balance_after": balance_after,
        "online_counter": counter,
        "datetime": dt,
        "tac": tac.hex().upper(),
    }
