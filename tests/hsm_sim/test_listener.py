"""The listener's bounds: a flood of idle, unauthenticated connections from one address holds a
bounded number of them and is cut off, big frames are refused before authentication, idle
connections are closed (and the client reconnects), and authenticated clients are served all
along. A real production-mode hsm-sim; the flood comes from 127.0.0.2."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cardsvc.hsm.connect import connect_hsm
from hsm_sim.child import start_hsm_process

SECRET = "a-long-shared-secret-for-tests"
BOUNDS = {
    "HSM_SIM_MAX_CONNECTIONS": "60",
    "HSM_SIM_MAX_CONNECTIONS_PER_ADDRESS": "30",
    "HSM_SIM_MAX_UNAUTHENTICATED_CONNECTIONS": "20",
    "HSM_SIM_MAX_UNAUTHENTICATED_PER_ADDRESS": "10",
    "HSM_SIM_AUTH_TIMEOUT_SECONDS": "1",
    "HSM_SIM_IDLE_TIMEOUT_SECONDS": "1.5",
}


@pytest.fixture
async def bounded(tmp_path: Path) -> AsyncIterator[str]:
    env = {
        "HSM_SIM_MODE": "production",
        "HSM_SIM_LMK_COMPONENTS": ",".join(secrets.token_hex(32) for _ in range(2)),
        "HSM_SIM_CLIENT_SECRET": SECRET,
        "HSM_SIM_GROUP_FACTOR": "3211FF0000000000",
        "HSM_SIM_KEYSTORE": str(tmp_path / "keystore.json"),
        "HSM_SIM_WORKERS": "0",
        **BOUNDS,
    }
    url, stop = await asyncio.to_thread(start_hsm_process, tmp_path, dev_keys=False, env=env)
    try:
        yield url
    finally:
        await asyncio.to_thread(stop)


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


async def _flood_connection(
    host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port, local_addr=("127.0.0.2", 0))


async def _closed(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        while await asyncio.wait_for(reader.read(4096), within):
            pass  # a TOO_MANY_CONNECTIONS frame may come first
        return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def test_authenticated_clients_are_served_through_a_flood(bounded: str) -> None:
    host, port = _address(bounded)
    client = await connect_hsm(bounded, secret=SECRET)
    flood = [await _flood_connection(host, port) for _ in range(100)]
    # The server holds at most 10 of them (unauthenticated, one address); the rest are refused.
    refused = await asyncio.gather(*(_closed(reader, 0.5) for reader, _ in flood))
    assert sum(refused) >= 90
    pings = [client.ping() for _ in range(50)]
    await asyncio.gather(*pings)  # the authenticated client, all the while
    # A new client from another address authenticates during the flood.
    other = await connect_hsm(bounded, secret=SECRET)
    await other.ping()
    # The ones held are cut when their authentication time runs out.
    held = [
        reader for (reader, _), was_refused in zip(flood, refused, strict=True) if not was_refused
    ]
    assert all(await asyncio.gather(*(_closed(reader, 3) for reader in held)))
    for _, writer in flood:
        writer.close()
    await client.ping()
    await other.close()
    await client.close()


async def test_a_big_frame_before_authentication_is_refused_unread(bounded: str) -> None:
    host, port = _address(bounded)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(struct.pack(">I", 16 * 1024 * 1024) + b"{" * 1000)
    await writer.drain()
    (length,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 5))
    answer = await asyncio.wait_for(reader.readexactly(length), 5)
    assert b"FRAME_TOO_LARGE" in answer
    assert b"before authentication" in answer
    assert await _closed(reader, 5)
    writer.close()


async def test_an_idle_connection_is_closed_and_the_client_reconnects(bounded: str) -> None:
    client = await connect_hsm(bounded, secret=SECRET, pool_size=1)
    await client.ping()
    await asyncio.sleep(2.0)  # past the idle timeout: the server closed it
    await client.ping()  # a new connection, authenticated again
    await client.close()


async def test_connections_over_the_per_address_bound_are_refused(bounded: str) -> None:
    clients = []
    with contextlib.suppress(Exception):
        for _ in range(40):
            clients.append(await connect_hsm(bounded, secret=SECRET, pool_size=1))
    # 30 per address at most (the connect itself pings: a refused one raises).
    assert len(clients) == 30
    for client in clients:
        await client.close()
