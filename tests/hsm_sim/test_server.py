"""The wire (DESIGN §7): framing errors, pipelining, authentication; real hsm-sim processes."""

from __future__ import annotations

import asyncio
import json
import secrets
import struct
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from cardsvc.hsm import HsmError
from cardsvc.hsm.connect import connect_hsm
from hsm_sim.child import start_hsm_process
from hsm_sim.cli import main
from hsm_sim.protocol import encode_frame
from hsm_sim.server import is_loopback


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port)


async def _read(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    try:
        (length,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 5))
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(reader.readexactly(length), 5))
        return answer
    except asyncio.IncompleteReadError:
        return None  # closed by the server


async def _still_serves(url: str) -> None:
    client = await connect_hsm(url)
    try:
        await client.ping()
    finally:
        await client.close()


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except ConnectionError:
        return True


async def test_garbage_gets_an_error_and_others_are_served(hsm_process_url: str) -> None:
    reader, writer = await _open(hsm_process_url)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await _read(reader)
    assert answer is not None
    assert answer["error"]["code"] == "FRAME_TOO_LARGE"
    assert await _closed(reader)
    writer.close()
    await _still_serves(hsm_process_url)


async def test_two_gigabyte_length_prefix(hsm_process_url: str) -> None:
    reader, writer = await _open(hsm_process_url)
    writer.write(struct.pack(">I", 2 * 1024**3) + b"{")
    answer = await _read(reader)
    assert answer is not None
    assert answer["error"]["code"] == "FRAME_TOO_LARGE"
    assert await _closed(reader)
    writer.close()
    await _still_serves(hsm_process_url)


async def test_half_a_frame_then_eof_closes(hsm_process_url: str) -> None:
    reader, writer = await _open(hsm_process_url)
    writer.write(struct.pack(">I", 100) + b'{"id":1,')
    await writer.drain()
    await _still_serves(hsm_process_url)  # while that one hangs mid-frame
    writer.write_eof()
    assert await _closed(reader)
    writer.close()


async def test_bad_json_unknown_command_and_bad_fields(hsm_process_url: str) -> None:
    reader, writer = await _open(hsm_process_url)
    for body in (b"not json", b"\xff\xfe\x00", b"[1,2]", b'{"cmd":"PING"}'):
        writer.write(struct.pack(">I", len(body)) + body)
    writer.write(encode_frame({"id": 5, "cmd": "FORMAT_C"}))
    writer.write(encode_frame({"id": 6, "cmd": "KEY_INFO"}))
    writer.write(encode_frame({"id": 7, "cmd": "KEY_INFO", "label": 42}))
    writer.write(encode_frame({"id": 8, "cmd": "TAC_VERIFY", "records": "all"}))
    writer.write(encode_frame({"id": 9, "cmd": "LOAD_AUTHORIZE", "asn": "3211000000000013"}))
    writer.write(encode_frame({"id": 10, "cmd": "PING"}))
    answers = [await _read(reader) for _ in range(10)]
    codes = [(a["id"], a["ok"] or a["error"]["code"]) for a in answers if a is not None]
    unnumbered = sorted(code for request_id, code in codes if request_id is None)
    assert unnumbered == ["BAD_JSON", "BAD_JSON", "BAD_REQUEST", "BAD_REQUEST"]
    numbered = {i: c for i, c in codes if i is not None}
    assert numbered == {
        5: "UNKNOWN_COMMAND",
        6: "BAD_REQUEST",
        7: "BAD_REQUEST",
        8: "BAD_REQUEST",
        9: "BAD_REQUEST",
        10: True,
    }
    writer.close()


async def test_many_requests_in_flight_on_one_connection(hsm_process_url: str) -> None:
    reader, writer = await _open(hsm_process_url)
    for i in range(1, 201):
        writer.write(
            encode_frame({"id": i, "cmd": "PING" if i % 2 else "KEY_INFO", "label": "MPK"})
        )
    await writer.drain()
    answers = [await _read(reader) for _ in range(200)]
    assert sorted(a["id"] for a in answers if a and a["ok"]) == list(range(1, 201))
    writer.close()


async def test_concurrent_clients(hsm_process_url: str) -> None:
    clients = [await connect_hsm(hsm_process_url, pool_size=2) for _ in range(5)]
    await asyncio.gather(*(c.key_info("MTK") for c in clients for _ in range(20)))
    for client in clients:
        await client.close()


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.0.0.7")
    assert not is_loopback("192.168.1.2")
    assert not is_loopback("unix")


def _production_env(tmp_path: Path, secret: str) -> dict[str, str]:
    return {
        "HSM_SIM_MODE": "production",
        "HSM_SIM_LMK_COMPONENTS": ",".join(secrets.token_hex(32) for _ in range(3)),
        "HSM_SIM_CLIENT_SECRET": secret,
        "HSM_SIM_GROUP_FACTOR": "3211FF0000000000",
        "HSM_SIM_KEYSTORE": str(tmp_path / "prod-keystore.json"),
        "HSM_SIM_WORKERS": "0",
    }


async def test_production_requires_authentication(tmp_path: Path) -> None:
    secret = "a-long-shared-secret-for-tests"
    url, stop = await asyncio.to_thread(
        start_hsm_process, tmp_path, dev_keys=False, env=_production_env(tmp_path, secret)
    )
    try:
        # Loopback earns nothing in production: no secret, no service.
        with pytest.raises(HsmError) as caught:
            await connect_hsm(url)
        assert caught.value.code == "AUTH_REQUIRED"
        with pytest.raises(HsmError) as wrong:
            await connect_hsm(url, secret="not-the-secret-at-all")
        assert wrong.value.code == "AUTH_FAILED"
        with pytest.raises(ValueError, match="no secret in it"):
            await connect_hsm(f"{url}?secret={secret}")
        client = await connect_hsm(url, secret=secret)
        await client.ping()
        # Production: no clear key import.
        with pytest.raises(HsmError) as forbidden:
            await client.key_import("X", "file-mac", bytes(16))
        assert forbidden.value.code == "FORBIDDEN"
        info = await client.key_generate("FILE_MAC", "file-mac")
        assert info.state == "active"
        await client.close()
    finally:
        await asyncio.to_thread(stop)


def test_dev_keys_and_missing_secrets_refused_in_production(tmp_path: Path) -> None:
    runner = CliRunner()
    env = _production_env(tmp_path, "a-long-shared-secret-for-tests")
    result = runner.invoke(main, ["serve", "--port", "0", "--dev-keys"], env=env)
    assert result.exit_code != 0
    assert "refused outside development" in result.output
    result = runner.invoke(
        main, ["serve", "--port", "0"], env={**env, "HSM_SIM_LMK_COMPONENTS": ""}
    )
    assert result.exit_code != 0
    result = runner.invoke(
        main, ["serve", "--port", "0"], env={**env, "HSM_SIM_CLIENT_SECRET": "short"}
    )
    assert result.exit_code != 0
    assert "HSM_SIM_CLIENT_SECRET" in result.output
