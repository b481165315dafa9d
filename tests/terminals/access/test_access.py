"""Sign-in and signed requests: MAC, sequence numbers, replay, expiry, unknown terminals."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select, update

from cardsvc import clock
from cardsvc.app import create_app
from cardsvc.cache import MemoryCache
from cardsvc.db import unit_of_work
from cardsvc.hsm import HsmClient, KeyRef
from cardsvc.resources import Resources
from hsm_sim import pboc
from hsm_sim.pin import format0_block, pan_field, pin_field
from terminals.access import service as access
from terminals.access.canonical import canonical_request
from terminals.access.models import TerminalSession
from terminals.devices.host_client import HostClient, HostError, dev_tmk, encode_body
from terminals.registry.models import TerminalStatus
from tests.factories import World
from tests.terminals.helpers import host

BLACKLIST = "/api/v1/terminal/lists/blacklist?since=0"


def test_canonical_form_known_answer() -> None:
    body = b'{"a":1}'
    got = canonical_request("post", "/api/v1/terminal/uploads", "321100000100", "0" * 32, 7, body)
    expected = (
        b"CSVC-MAC-1\nPOST\n/api/v1/terminal/uploads\n321100000100\n" + b"0" * 32 + b"\n7\n"
        + hashlib.sha256(body).hexdigest().encode()
    )  # fmt: skip
    assert got == expected
    # Pinned bytes: the retail MAC of this canonical form under terminal 321100000100's dev TMK.
    assert (
        dev_tmk("321100000100").hex().upper()
        == pboc.diversify(
            bytes.fromhex("7DEBF72ABCE791A8C22495E64A6A93C8"), bytes.fromhex("0000321100000100")
        )
        .hex()
        .upper()
    )
    assert pboc.full_mac(dev_tmk("321100000100"), got).hex().upper() == MAC_KAT


# Self-computed (regression); the HSM derives the TMK on its own path and must agree (below).
MAC_KAT = "065E6B41B5753231"


async def test_hsm_agrees_with_the_device_tmk(hsm: HsmClient) -> None:
    data = canonical_request(
        "POST", "/api/v1/terminal/uploads", "321100000100", "0" * 32, 7, b'{"a":1}'
    )
    mac = await hsm.mac_generate(KeyRef.terminal_master(bytes.fromhex("321100000100")), data)
    assert mac.hex().upper() == MAC_KAT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("POST", "/x", "32110000010", "", 0), "12 digits"),
        (("POST", "/x", "321100000100", "XYZ", 0), "session id"),
        (("POST", "/x", "321100000100", "", -1), "negative"),
        (("POST", "x", "321100000100", "", 0), "absolute"),
    ],
)
def test_canonical_form_refuses_bad_parts(
    args: tuple[str, str, str, str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        canonical_request(*args, b"")


async def test_sign_in_gives_a_working_session(client: httpx.AsyncClient, world: World) -> None:
    terminal = host(client, world.bus_terminals[0])
    signed = await terminal.sign_in()
    assert len(signed.session_id) == 32
    assert signed.params_version >= 1
    assert signed.merchant_category == "bus"
    assert len(signed.server_time) == 14
    first = await terminal.get(BLACKLIST)
    assert first.status_code == 200, first.text
    second = await terminal.get("/api/v1/terminal/lists/parameters?since=0")
    assert second.status_code == 200
    assert {e["table"] for e in second.json()["entries"]} >= {"fares", "concessions", "transfer"}


async def test_sign_in_with_a_wrong_tmk_is_refused(client: httpx.AsyncClient, world: World) -> None:
    t = world.bus_terminals[0]
    impostor = HostClient(client, t, dev_tmk(world.bus_terminals[1]), psam_no="50" + t + "00")
    with pytest.raises(HostError) as caught:
        await impostor.sign_in()
    assert caught.value.status == 401
    assert caught.value.body["error"] == "MacInvalid"  # type: ignore[index]


async def test_unknown_and_suspended_terminals_are_refused(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    with pytest.raises(HostError) as caught:
        await host(client, "321199999999").sign_in()
    assert caught.value.status == 403
    terminal = host(client, world.bus_terminals[0])
    await terminal.sign_in()
    async with unit_of_work(resources.sessions) as session:
        await access.set_terminal_status(
            session, world.bus_terminals[0], TerminalStatus.suspended, actor="test"
        )
    refused = await terminal.get(BLACKLIST)
    assert refused.status_code == 403
    with pytest.raises(HostError) as caught:
        await terminal.sign_in()
    assert caught.value.status == 403


async def test_wrong_psam_is_refused(client: httpx.AsyncClient, world: World) -> None:
    t = world.bus_terminals[0]
    with pytest.raises(HostError) as caught:
        await HostClient(client, t, dev_tmk(t), psam_no="5099999999999900").sign_in()
    assert caught.value.status == 403
    assert caught.value.body["error"] == "PsamMismatch"  # type: ignore[index]


async def test_replayed_reordered_and_unsigned_requests_are_refused(
    client: httpx.AsyncClient, world: World
) -> None:
    terminal = host(client, world.bus_terminals[0])
    await terminal.sign_in()
    headers = terminal.signed_headers("GET", BLACKLIST, b"")
    assert (await client.get(BLACKLIST, headers=headers)).status_code == 200
    replay = await client.get(BLACKLIST, headers=headers)
    assert replay.status_code == 401
    assert replay.json()["error"] == "ReplayRefused"
    # Sequence 5 then 4: the older one arrives late and is refused.
    five = terminal.signed_headers("GET", BLACKLIST, b"", seq=5)
    four = terminal.signed_headers("GET", BLACKLIST, b"", seq=4)
    assert (await client.get(BLACKLIST, headers=five)).status_code == 200
    late = await client.get(BLACKLIST, headers=four)
    assert late.status_code == 401
    assert late.json()["error"] == "ReplayRefused"
    # No MAC at all, or a MAC over other content.
    unsigned = {
        k: v
        for k, v in terminal.signed_headers("GET", BLACKLIST, b"", seq=9).items()
        if k != "X-Mac"
    }
    assert (await client.get(BLACKLIST, headers=unsigned)).json()["error"] == "MacInvalid"
    tampered = terminal.signed_headers(
        "GET", "/api/v1/terminal/lists/blacklist?since=1", b"", seq=10
    )
    bad = await client.get(BLACKLIST, headers=tampered)
    assert bad.status_code == 401
    assert bad.json()["error"] == "MacInvalid"
    # A refused MAC does not burn the sequence number; the genuine request with it passes.
    genuine = terminal.signed_headers("GET", BLACKLIST, b"", seq=10)
    assert (await client.get(BLACKLIST, headers=genuine)).status_code == 200


async def test_body_is_covered_by_the_mac(client: httpx.AsyncClient, world: World) -> None:
    terminal = host(client, world.bus_terminals[0])
    await terminal.sign_in()
    path = "/api/v1/terminal/lists/versions"
    signed_body = encode_body({"blacklist_version": 1, "params_version": 1})
    headers = terminal.signed_headers("POST", path, signed_body)
    headers["Content-Type"] = "application/json"
    other = encode_body({"blacklist_version": 9, "params_version": 9})
    response = await client.post(path, content=other, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "MacInvalid"


async def test_session_of_another_terminal_is_refused(
    client: httpx.AsyncClient, world: World
) -> None:
    a = host(client, world.bus_terminals[0])
    await a.sign_in()
    headers = a.signed_headers("GET", BLACKLIST, b"")
    headers["X-Terminal-No"] = world.bus_terminals[1]
    response = await client.get(BLACKLIST, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "SessionExpired"


async def test_expired_and_superseded_sessions_are_refused(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    terminal = host(client, world.bus_terminals[0])
    await terminal.sign_in()
    async with unit_of_work(resources.sessions) as session:
        await session.execute(
            update(TerminalSession)
            .where(TerminalSession.id == terminal.session_id)
            .values(expires_at=clock.now() - timedelta(seconds=1))
        )
    expired = await terminal.get(BLACKLIST)
    assert expired.status_code == 401
    assert expired.json()["error"] == "SessionExpired"
    await terminal.sign_in()
    old_headers = terminal.signed_headers("GET", BLACKLIST, b"")
    old_session = terminal.session_id
    await terminal.sign_in()  # a new sign-in ends the previous session
    assert terminal.session_id != old_session
    response = await client.get(BLACKLIST, headers=old_headers)
    assert response.status_code == 401
    assert response.json()["error"] == "SessionExpired"


def _sign_in(
    t: str, terminal_time: str, nonce: str = "00112233445566AA"
) -> tuple[bytes, dict[str, str]]:
    body = encode_body(
        {"terminal_no": t, "psam_no": "50" + t + "00", "terminal_time": terminal_time, "nonce": nonce,
         "blacklist_version": 0, "params_version": 0}
    )  # fmt: skip
    mac = pboc.full_mac(
        dev_tmk(t), canonical_request("POST", "/api/v1/terminal/sign-in", t, "", 0, body)
    )
    return body, {
        "X-Terminal-No": t,
        "X-Mac": mac.hex().upper(),
        "Content-Type": "application/json",
    }


def _local(moment: datetime) -> str:
    return moment.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y%m%d%H%M%S")


async def test_sign_in_replay_is_refused(client: httpx.AsyncClient, world: World) -> None:
    """The nonce is in the database: a replay is refused whatever the cache remembers."""
    body, headers = _sign_in(world.bus_terminals[0], _local(clock.now()))
    assert (
        await client.post("/api/v1/terminal/sign-in", content=body, headers=headers)
    ).status_code == 200
    # The same API with an empty cache, as after a Redis restart: the replay is still refused.
    forgetful = dataclasses.replace(world.resources, cache=MemoryCache())
    transport = httpx.ASGITransport(app=create_app(forgetful.settings, forgetful))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as restarted:
        again = await restarted.post("/api/v1/terminal/sign-in", content=body, headers=headers)
    assert again.status_code == 401
    assert again.json()["error"] == "ReplayRefused"


async def test_a_sign_in_outside_the_window_is_refused(
    client: httpx.AsyncClient, world: World
) -> None:
    window = timedelta(seconds=world.resources.settings.terminal_sign_in_window_seconds)
    captured = clock.now() - window - timedelta(seconds=5)
    body, headers = _sign_in(world.bus_terminals[0], _local(captured))
    response = await client.post("/api/v1/terminal/sign-in", content=body, headers=headers)
    assert (response.status_code, response.json()["error"]) == (401, "SignInTimeRefused")
    assert _local(clock.now())[:10] in response.json()["detail"]  # the host's time, to set


async def test_a_sign_in_replayed_after_the_window_is_refused_by_its_time(
    client: httpx.AsyncClient, world: World
) -> None:
    start = clock.now()
    window = timedelta(seconds=world.resources.settings.terminal_sign_in_window_seconds)
    body, headers = _sign_in(world.bus_terminals[0], _local(start))
    with clock.stopped_at(start):
        assert (
            await client.post("/api/v1/terminal/sign-in", content=body, headers=headers)
        ).status_code == 200
    with clock.stopped_at(start + 3 * window):
        # A later sign-in forgets the old nonce; the replay still fails, on its time.
        fresh, fresh_headers = _sign_in(world.bus_terminals[0], _local(clock.now()), "AB" * 8)
        assert (
            await client.post("/api/v1/terminal/sign-in", content=fresh, headers=fresh_headers)
        ).status_code == 200
        replay = await client.post("/api/v1/terminal/sign-in", content=body, headers=headers)
    assert (replay.status_code, replay.json()["error"]) == (401, "SignInTimeRefused")


def test_protocol_document_examples() -> None:
    """docs/terminal-protocol.md §8, byte for byte (development keys)."""
    t = "321100000100"
    tmk = dev_tmk(t)
    assert tmk.hex().upper() == "875E97D654E08F81283ADF0FF326C955"
    sign_in = encode_body(
        {
            "terminal_no": t,
            "psam_no": "5032110000010000",
            "terminal_time": "20250301073000",
            "nonce": "9F1C2A7700B3E415",
            "blacklist_version": 0,
            "params_version": 0,
        }
    )
    canonical = canonical_request("POST", "/api/v1/terminal/sign-in", t, "", 0, sign_in)
    assert pboc.full_mac(tmk, canonical).hex().upper() == "D8C21167C1AB619F"
    key = pboc.tdes_decrypt(tmk, bytes.fromhex("FBCF8B09C12C5330A42E610BEAD532FE"))
    assert key.hex().upper() == "0123456789ABCDEFFEDCBA9876543210"
    assert pboc.kcv(key).hex().upper() == "08D7B4"
    session_id = "5f0c9a1e2b3d4c5e6f708192a3b4c5d6"
    get = canonical_request(
        "GET", "/api/v1/terminal/lists/blacklist?since=3", t, session_id, 43, b""
    )
    assert pboc.full_mac(key, get).hex().upper() == "7FED5E1A579A427C"
    dtk = pboc.diversify_path(
        bytes.fromhex("A7AE835B507148C5EBF6D7AC59C0CE2E"),
        bytes.fromhex("3211FF0000000000"),
        bytes.fromhex("3211000000000013"),
    )
    tac = pboc.purchase_tac(dtk, 200, 9, bytes.fromhex(t), 1027, "20250301081502")
    assert tac.hex().upper() == "A9A6E78D"
    # §10: the PIN key and a PIN block.
    pin_key = pboc.tdes_decrypt(tmk, bytes.fromhex("A42E610BEAD532FEFBCF8B09C12C5330"))
    assert pin_key.hex().upper() == "FEDCBA98765432100123456789ABCDEF"
    assert pboc.kcv(pin_key).hex().upper() == "7B8358"
    assert pin_field("482915").hex().upper() == "06482915FFFFFFFF"
    assert pan_field("3211000000000013").hex().upper() == "0000100000000001"
    clear = format0_block("482915", "3211000000000013")
    assert clear.hex().upper() == "06483915FFFFFFFE"
    assert pboc.tdes_encrypt(pin_key, clear).hex().upper() == "8CEB6516FA1F49DC"


async def test_sign_in_delivers_a_pin_key(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    device = host(client, world.bus_terminals[0])
    await device.sign_in()  # checks both KCVs
    async with resources.sessions() as s:
        row = (
            await s.execute(
                select(TerminalSession.key_blob, TerminalSession.pin_key_blob).where(
                    TerminalSession.id == device.session_id
                )
            )
        ).one()
    assert row.pin_key_blob is not None
    assert row.pin_key_blob != row.key_blob
