"""Client audit chains: AUDIT_CHECKPOINT seals only onto the head this HSM anchored (or repeats its
last checkpoint), AUDIT_VERIFY proves a chain and tells the head, and the head is kept in the
HSM's own log across a restart. Known answers for the chain MAC under the development key."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from cardsvc.hsm import AuditAnchor, HsmAuditConflict, HsmClient, HsmKeyError
from cardsvc.hsm.connect import connect_hsm
from hsm_sim.audit import chain_mac, verify_file
from hsm_sim.child import start_hsm_process
from hsm_sim.keystore import DEV_KEYS

LABEL = "AUDIT_MAC"
DEV_AUDIT_KEY = next(bytes.fromhex(v) for label, _, v in DEV_KEYS if label == LABEL)
GENESIS = AuditAnchor.genesis()


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_chain_mac_known_answers() -> None:
    assert DEV_AUDIT_KEY.hex().upper() == (
        "0B95F0F15ACEB1287DE4E29F4013BE56C39CF7D5FFE5BB8988A93B201D450A67"
    )
    first = chain_mac(DEV_AUDIT_KEY, 1, bytes(32), digest("entry one"))
    second = chain_mac(DEV_AUDIT_KEY, 2, first, digest("entry two"))
    assert first.hex().upper() == "114201ADB7581E4117A15C228A565B658C2517C0DA491BE0369F60A085E8BBCA"
    assert second.hex().upper() == (
        "BF10C03878E7E7A84D45FFD0EA8F8C72D8E7DC89C86D34ADBE7DB7127F5308EB"
    )
    # The definition, independently: HMAC-SHA256 over context ‖ seq(8) ‖ previous MAC ‖ digest.
    message = b"hsm-sim audit chain v1|" + (2).to_bytes(8, "big") + first + digest("entry two")
    assert second == hmac.new(DEV_AUDIT_KEY, message, hashlib.sha256).digest()
    # The number is bound: the same entry at another place has another MAC.
    assert chain_mac(DEV_AUDIT_KEY, 3, first, digest("entry two")) != second


async def test_checkpoint_extends_only_the_anchored_head(fresh_hsm_client: HsmClient) -> None:
    hsm = fresh_hsm_client
    digests = [digest(f"entry {n}") for n in range(1, 4)]
    sealed = await hsm.audit_checkpoint(LABEL, GENESIS, digests)
    assert not sealed.replayed
    mac = bytes(32)
    for n, (d, got) in enumerate(zip(digests, sealed.macs, strict=True), start=1):
        mac = chain_mac(DEV_AUDIT_KEY, n, mac, d)
        assert got == mac
    head = AuditAnchor(3, sealed.macs[-1])

    # A repeat of the last checkpoint (a client that crashed before storing) gets the same MACs.
    again = await hsm.audit_checkpoint(LABEL, GENESIS, digests)
    assert again.replayed
    assert again.macs == sealed.macs
    # Anything else that does not continue from the head is refused: a rewritten history...
    with pytest.raises(HsmAuditConflict, match="anchored at entry 3"):
        await hsm.audit_checkpoint(LABEL, GENESIS, [digest("forged"), *digests[1:]])
    # ... a chain from an older entry, or the last batch cut short.
    with pytest.raises(HsmAuditConflict):
        await hsm.audit_checkpoint(LABEL, AuditAnchor(1, sealed.macs[0]), [digest("forged")])
    with pytest.raises(HsmAuditConflict):
        await hsm.audit_checkpoint(LABEL, GENESIS, digests[:2])

    more = await hsm.audit_checkpoint(LABEL, head, [digest("entry 4")])
    assert more.macs == [chain_mac(DEV_AUDIT_KEY, 4, head.mac, digest("entry 4"))]
    # Now the first checkpoint is not the last one: it can no longer be repeated.
    with pytest.raises(HsmAuditConflict):
        await hsm.audit_checkpoint(LABEL, GENESIS, digests)


async def test_verify_proves_a_prefix_and_tells_the_head(fresh_hsm_client: HsmClient) -> None:
    hsm = fresh_hsm_client
    digests = [digest(f"entry {n}") for n in range(1, 6)]
    macs = (await hsm.audit_checkpoint(LABEL, GENESIS, digests)).macs
    proof = await hsm.audit_verify(LABEL, GENESIS, list(zip(digests, macs, strict=True)))
    assert proof.valid == 5
    assert proof.anchor == AuditAnchor(5, macs[-1])
    changed = list(zip(digests, macs, strict=True))
    changed[2] = (digest("entry 3, changed"), macs[2])
    assert (await hsm.audit_verify(LABEL, GENESIS, changed)).valid == 2
    # Renumbered (entry 2 dropped, the rest moved up): entry 2 fails.
    dropped = [changed[0], *list(zip(digests, macs, strict=True))[2:]]
    assert (await hsm.audit_verify(LABEL, GENESIS, dropped)).valid == 1
    # The middle of the chain proves out from its predecessor.
    tail = list(zip(digests, macs, strict=True))[3:]
    assert (await hsm.audit_verify(LABEL, AuditAnchor(3, macs[2]), tail)).valid == 2


async def test_only_an_audit_key_seals(fresh_hsm_client: HsmClient) -> None:
    with pytest.raises(HsmKeyError) as caught:
        await fresh_hsm_client.audit_checkpoint("FILE_MAC", GENESIS, [digest("x")])
    assert caught.value.code == "KEY_USAGE"


async def test_the_head_survives_a_restart_in_the_hsm_log(tmp_path: Path) -> None:
    digests = [digest(f"entry {n}") for n in range(1, 3)]
    url, stop = start_hsm_process(tmp_path)
    try:
        hsm = await connect_hsm(url)
        macs = (await hsm.audit_checkpoint(LABEL, GENESIS, digests)).macs
        await hsm.close()
    finally:
        stop()
    log = tmp_path / "audit.log"
    assert verify_file(log).ok
    anchors = [json.loads(line).get("anchor") for line in log.read_text().splitlines()]
    assert [a for a in anchors if a] == [
        {"label": LABEL, "first": 1, "seq": 2, "prev": "00" * 32, "mac": macs[-1].hex().upper(),
         "version": 1}
    ]  # fmt: skip

    url, stop = start_hsm_process(tmp_path)
    try:
        hsm = await connect_hsm(url)
        assert (await hsm.audit_verify(LABEL, GENESIS, [])).anchor == AuditAnchor(2, macs[-1])
        with pytest.raises(HsmAuditConflict):
            await hsm.audit_checkpoint(LABEL, GENESIS, [digest("a new history")])
        await hsm.close()
    finally:
        stop()
