"""Key store at rest (no clear key, LMK binding, integrity) and the hash-chained audit log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cardsvc.hsm.connect import connect_hsm
from hsm_sim.audit import AuditLog, mask_asn, verify_file
from hsm_sim.cli import main
from hsm_sim.keystore import DEV_KEYS, KeyStore, KeyStoreError, Lmk
from hsm_sim.settings import development_lmk_components
from hsm_sim.tacverify import TtlLru

COMPONENTS = ["11" * 32, "22" * 32, "43" * 32]


def _assert_no_clear_key(raw: bytes) -> None:
    for label, _, value in DEV_KEYS:
        key = bytes.fromhex(value)
        for needle in (value.upper().encode(), value.lower().encode(), key):
            assert needle not in raw, f"clear {label} found in the key store"


async def test_keystore_file_of_the_server_holds_no_clear_key(
    hsm_process_url: str, hsm_process_dir: Path
) -> None:
    client = await connect_hsm(hsm_process_url)
    await client.key_info("MTK")
    await client.close()
    raw = (hsm_process_dir / "keystore.json").read_bytes()
    assert b"MTK" in raw  # metadata is there; material is not
    _assert_no_clear_key(raw)


def test_keystore_round_trip_and_wrong_lmk(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(Lmk(COMPONENTS), path)
    store.load_development_keys()
    generated = store.create("EXTRA", "file-mac", "3DES")
    _assert_no_clear_key(path.read_bytes())
    assert store.material(generated).hex() not in path.read_text().lower()

    reopened = KeyStore(Lmk(COMPONENTS), path)
    assert reopened.material(reopened.get("EXTRA")) == store.material(generated)
    with pytest.raises(KeyStoreError, match="do not match"):
        KeyStore(Lmk(development_lmk_components()), path)


def test_keystore_usage_cannot_be_edited_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    KeyStore(Lmk(COMPONENTS), path).load_development_keys()
    data = json.loads(path.read_text())
    for item in data["keys"]:
        if item["label"] == "MTK":
            item["usage"] = "file-mac"  # try to make the TAC master sign files
    path.write_text(json.dumps(data))
    with pytest.raises(KeyStoreError, match="integrity"):
        KeyStore(Lmk(COMPONENTS), path)


def test_lmk_components_are_checked() -> None:
    with pytest.raises(KeyStoreError):
        Lmk(["11" * 32])
    with pytest.raises(KeyStoreError):
        Lmk(["11" * 32, "11" * 32])
    with pytest.raises(KeyStoreError):
        Lmk(["11" * 31, "22" * 32])
    assert Lmk(COMPONENTS).check_value != Lmk(COMPONENTS[:2]).check_value


def test_lmk_ceremony_cli() -> None:
    result = CliRunner().invoke(main, ["lmk-components", "generate", "--count", "2"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    components = [line.split(": ")[1] for line in lines[:2]]
    check = CliRunner().invoke(main, ["lmk-components", "check", *components])
    assert check.output.strip() == lines[2].split(": ")[1]


def test_keys_list_cli(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    KeyStore(Lmk(COMPONENTS), path).load_development_keys()
    result = CliRunner().invoke(main, ["keys", "list", "--keystore", str(path)])
    assert result.exit_code == 0
    assert "MTK" in result.output
    assert "tac-master" in result.output


def test_ttl_lru_cache() -> None:
    cache = TtlLru(size=2, ttl=10)
    cache.put((1, b"a"), b"A", now=0)
    cache.put((1, b"b"), b"B", now=0)
    assert cache.get((1, b"a"), now=1) == b"A"
    cache.put((1, b"c"), b"C", now=1)  # evicts b, the least recently used
    assert cache.get((1, b"b"), now=1) is None
    assert cache.get((1, b"a"), now=1) == b"A"
    assert cache.get((1, b"a"), now=11) is None  # expired
    assert len(cache) == 1


# --- audit -------------------------------------------------------------------------------------


def _write_log(path: Path, n: int) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.append({"cmd": "PING", "id": i, "ok": True})
    log.close()


def test_audit_verify_cli_detects_changed_and_removed_entries(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "audit.log"
    _write_log(path, 5)
    assert runner.invoke(main, ["audit", "verify", "--log", str(path)]).exit_code == 0
    lines = path.read_text().splitlines()

    changed = tmp_path / "changed.log"
    entry = json.loads(lines[2])
    entry["ok"] = False
    changed.write_text("\n".join([*lines[:2], json.dumps(entry), *lines[3:]]) + "\n")
    result = runner.invoke(main, ["audit", "verify", "--log", str(changed)])
    assert result.exit_code == 1
    assert "line 3" in result.output

    removed = tmp_path / "removed.log"
    removed.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    assert runner.invoke(main, ["audit", "verify", "--log", str(removed)]).exit_code == 1

    rehashed = tmp_path / "rehashed.log"  # changed and its own hash recomputed: the chain breaks
    from hsm_sim.audit import entry_hash

    entry["hash"] = entry_hash(entry)
    rehashed.write_text("\n".join([*lines[:2], json.dumps(entry), *lines[3:]]) + "\n")
    assert runner.invoke(main, ["audit", "verify", "--log", str(rehashed)]).exit_code == 1


def test_audit_log_resumes_its_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_log(path, 3)
    _write_log(path, 2)
    report = verify_file(path)
    assert report.ok
    assert report.entries == 5


async def test_server_audit_log_masks_asn_and_matches_head(
    hsm_process_url: str, hsm_process_dir: Path
) -> None:
    client = await connect_hsm(hsm_process_url)
    from cardsvc.hsm import HsmMacInvalid

    with pytest.raises(HsmMacInvalid):
        await client.load_authorize(
            asn=bytes.fromhex("3211987654321017"),
            key_version=1,
            random=bytes(4),
            online_counter=1,
            balance_before=0,
            amount=1,
            tx_type=2,
            terminal_no=bytes(6),
            mac1=bytes(4),
            host_datetime="20250101000000",
        )
    head = await client.audit_head()
    await client.close()
    path = hsm_process_dir / "audit.log"  # written before each answer is sent
    text = path.read_text()
    assert "3211987654321017" not in text
    assert mask_asn("3211987654321017") in text
    _assert_no_clear_key(text.encode())
    entries = [json.loads(line) for line in text.splitlines()]
    assert entries[head.seq - 1]["hash"] == head.hash
    assert any(e.get("code") == "MAC_INVALID" for e in entries)
    result = CliRunner().invoke(main, ["audit", "verify", "--log", str(path)])
    assert result.exit_code == 0
