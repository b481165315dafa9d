"""The counter agent in its own process, against a real ``cardsvc serve``, the card behind pcscd
+ vpcd: the agent's environment holds the API's URL and the clerk's login, nothing else."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cardsvc.db import unit_of_work
from cardsvc.resources import open_resources
from cardsvc.settings import Mode, Settings
from cardsvc.staff import service as staff
from cardsvc.staff.auth import Role
from terminals.devices.apdu import CardTorn
from terminals.devices.card import Lock, VirtualCard, make_blank_card
from terminals.devices.vpcd import VpcdCard
from terminals.registry.models import MerchantCategory, TerminalKind
from tests.conftest_pcsc import inserted
from tests.factories import Site, make_site, resident_id
from tests.loopback import local
from tests.serving import dev_env, serving
from tests.terminals.helpers import signed_in

pytestmark = pytest.mark.pcsc

PASSWORD = "counter agent password"
STAFF = {
    "clerk": Role.counter_operator,
    "boss": Role.supervisor,
    "looker": Role.auditor,
}


PIN_PAD = 777


async def _seed(settings: Settings) -> None:
    async with open_resources(settings) as resources:
        async with unit_of_work(resources.sessions) as session:
            for username, role in STAFF.items():
                await staff.create_staff(
                    session, username=username, password=PASSWORD, roles=[role], actor="test"
                )
        await make_site(resources, PIN_PAD, MerchantCategory.retail, TerminalKind.counter)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[str]:
    var_dir = tmp_path_factory.mktemp("agent") / "var"
    # The schema at head already (serve's upgrade finds nothing to do): a copy of the template.
    var_dir.mkdir()
    shutil.copyfile(sqlite_template, var_dir / "cardsvc.db")
    env = dev_env(var_dir)
    with serving(env, ready="/readyz") as base:
        settings = Settings(
            mode=Mode.development, var_dir=var_dir, database_url="", hsm_url="spawn"
        )
        asyncio.run(_seed(settings))
        yield base


def _headers(api: str, username: str) -> dict[str, str]:
    r = local().post(f"{api}/api/v1/staff/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


_orders = iter(range(100, 999))


def _approved_application(api: str) -> int:
    clerk, boss = _headers(api, "clerk"), _headers(api, "boss")
    body = {"resident_id": resident_id(order=str(next(_orders))), "name": "周八",
            "phone": "13800000000", "address": "x"}  # fmt: skip
    r = local().post(f"{api}/api/v1/residents", json=body, headers=clerk)
    assert r.status_code == 201, r.text
    r = local().post(
        f"{api}/api/v1/applications", json={"resident_id": r.json()["id"]}, headers=clerk
    )
    assert r.status_code == 201, r.text
    application: int = r.json()["id"]
    r = local().post(f"{api}/api/v1/applications/{application}/approve", headers=boss)
    assert r.status_code == 200, r.text
    return application


def _status(api: str, application: int) -> str:
    r = local().get(f"{api}/api/v1/applications/{application}", headers=_headers(api, "clerk"))
    status: str = r.json()["status"]
    return status


def agent(api: str, *args: str, user: str = "clerk") -> subprocess.CompletedProcess[str]:
    """``cardsvc-agent`` as a counter PC runs it: no database URL, no HSM address."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "CARDSVC_AGENT_API_URL": api,
        "CARDSVC_AGENT_USER": user,
        "CARDSVC_AGENT_PASSWORD": PASSWORD,
    }
    assert not any(k.startswith(("CARDSVC_DATABASE", "CARDSVC_HSM", "HSM_SIM")) for k in env)
    return subprocess.run(
        [sys.executable, "-m", "cardsvc.agent", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class PulledOnce(VirtualCard):
    """Leaves the reader at its ``pull_at``-th command (the clerk pulls the card out)."""

    pull_at = 0

    def process(self, apdu: bytes) -> bytes:
        self.pull_at -= 1
        if self.pull_at == 0:
            raise CardTorn("pulled out")
        return super().process(apdu)


def test_readers_are_listed(api: str, pcscd: str) -> None:
    done = agent(api, "readers")
    assert done.returncode == 0, done.stderr
    assert f"0: {pcscd}" in done.stdout.splitlines()


def test_personalize_through_the_agent(api: str, pcscd: str) -> None:
    application = _approved_application(api)
    card = make_blank_card(bytes.fromhex("A6E0000000000001"))
    with inserted(card, pcscd):
        done = agent(api, "personalize", "--application", str(application), "--reader", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Insert the blank card" in out
    assert "Do not remove the card" in out
    assert "step 1 of 18" in out
    assert "Done in" in out
    assert "ready to hand over" in out
    assert _status(api, application) == "personalized"
    assert card.state.transport_key is None


def test_a_card_pulled_out_and_put_back_resumes(api: str, pcscd: str) -> None:
    application = _approved_application(api)
    card = PulledOnce(make_blank_card(bytes.fromhex("A6E0000000000002")).state)
    card.pull_at = 12  # among the key writes
    with inserted(card, pcscd):  # vpcd puts a pulled card back after 0.3 s
        done = agent(api, "personalize", "--application", str(application), "--reader", pcscd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "The card was removed. Put the same card back" in done.stdout
    assert "Resuming" in done.stdout
    assert _status(api, application) == "personalized"


def test_restart_another_card_and_role(api: str, pcscd: str) -> None:
    application = _approved_application(api)
    card = PulledOnce(make_blank_card(bytes.fromhex("A6E0000000000003")).state)
    card.pull_at = 20  # among the file writes
    slot = VpcdCard(card, reinsert_delay=None)  # pulled and kept out
    slot.start()
    try:
        done = agent(
            api, "personalize", "--application", str(application), "--reader", "0", "--wait", "2"
        )
    finally:
        slot.stop()
    assert done.returncode == 1
    assert "run the same command again with the same card" in done.stderr
    assert _status(api, application) == "in_production"
    # Another blank card is refused: the session is bound to the first chip.
    with inserted(make_blank_card(bytes.fromhex("A6E0000000000004")), pcscd):
        other = agent(api, "personalize", "--application", str(application), "--reader", "0")
        looker = agent(
            api, "personalize", "--application", str(application), "--reader", "0", user="looker"
        )
    assert other.returncode == 1
    assert "OtherCardPresented" in other.stderr
    assert "put that card in the reader" in other.stderr
    assert looker.returncode == 1
    assert "Forbidden" in looker.stderr
    # The agent started again with the first card resumes it.
    with inserted(card, pcscd):
        again = agent(api, "personalize", "--application", str(application), "--reader", pcscd)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Resuming" in again.stdout
    assert _status(api, application) == "personalized"


def _lock(card: VirtualCard) -> Lock:
    return card.state.lock


async def _pin_block(api: str, pin: str, card_no: str) -> str:
    """What the counter's PIN pad (a signed-in counter terminal) sends for the typed PIN."""
    site = Site(f"{PIN_PAD:015d}", f"{PIN_PAD:012d}", MerchantCategory.retail, 0, 0,
                TerminalKind.counter)  # fmt: skip
    async with httpx.AsyncClient(base_url=api) as client:
        pad = await signed_in(client, site)
        block: str = pad.pin_block(pin, card_no)
    return block


def test_counter_work_through_the_agent(api: str, pcscd: str) -> None:
    """Hand-over, reading the card and its record, purse block and unblock, the online PIN."""
    application = _approved_application(api)
    card = make_blank_card(bytes.fromhex("A6E0000000000005"))
    with inserted(card, pcscd):
        assert (
            agent(api, "personalize", "--application", str(application), "--reader", "0").returncode
            == 0
        )
    with inserted(make_blank_card(bytes.fromhex("A6E0000000000006")), pcscd):
        wrong = agent(api, "handover", "--application", str(application), "--reader", "0")
    assert wrong.returncode == 1
    assert "not the card of application" in wrong.stderr
    with inserted(card, pcscd):
        handed = agent(api, "handover", "--application", str(application), "--reader", "0")
        read = agent(api, "read", "--reader", "0")
    assert handed.returncode == 0, handed.stdout + handed.stderr
    assert "is active: hand it to the holder" in handed.stdout
    card_no = card.state.files[0x15][12:20].hex()
    assert read.returncode == 0, read.stderr
    assert f"card number   {card_no}" in read.stdout
    assert "chip serial   A6E0000000000005" in read.stdout
    assert "on record     active" in read.stdout
    assert "WARNING" not in read.stdout
    # Frozen by a supervisor: the counter blocks the purse on the chip; an active card's purse
    # cannot be blocked, a frozen one's cannot be unblocked.
    boss = _headers(api, "boss")
    with inserted(card, pcscd):
        active = agent(api, "block", "--card", card_no, "--reader", "0")
        assert local().post(f"{api}/api/v1/cards/{card_no}/freeze", headers=boss).status_code == 200
        blocked = agent(api, "block", "--card", card_no, "--reader", "0")
        early = agent(api, "unblock", "--card", card_no, "--reader", "0")
    assert active.returncode == 1
    assert "InvalidStateTransition" in active.stderr
    assert blocked.returncode == 0, blocked.stdout + blocked.stderr
    assert _lock(card) is Lock.TEMPORARY
    assert early.returncode == 1
    assert local().post(f"{api}/api/v1/cards/{card_no}/unfreeze", headers=boss).status_code == 200
    with inserted(card, pcscd):
        unblocked = agent(api, "unblock", "--card", card_no, "--reader", "0")
    assert unblocked.returncode == 0, unblocked.stdout + unblocked.stderr
    assert _lock(card) is Lock.NONE
    # The online PIN from the counter's PIN pad: only its encrypted block reaches the agent.
    block = asyncio.run(_pin_block(api, "482915", card_no))
    with inserted(card, pcscd):
        pinned = agent(
            api, "pin", "--pin-pad", f"{PIN_PAD:012d}", "--reader", "0",
            "--pin-pad-command", f"sh -c 'echo {block}' pin-pad",
        )  # fmt: skip
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    r = local().post(
        f"{api}/api/v1/accounts/lookup", json={"card_no": card_no}, headers=_headers(api, "clerk")
    )
    assert r.json()["pin_set"] is True
