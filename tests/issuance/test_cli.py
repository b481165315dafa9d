"""The counter CLI (``cardsvc residents|applications|cards|counter``) against a test database.

Each command opens its own resources from the environment (``get_settings()``), as a clerk's
shell would; the tests drive them with click's CliRunner in a worker thread (the command runs its
own event loop) and check the database through the test's own resources.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cardsvc import clock
from cardsvc.applications import service as applications
from cardsvc.blacklist import service as blacklist
from cardsvc.cards import repository as cards_repo
from cardsvc.cards.models import CardStatus
from cardsvc.cards.numbers import make_card_no
from cardsvc.cli import main
from cardsvc.db import read_sessions, unit_of_work
from cardsvc.personalization import files
from cardsvc.reader.link import InProcessLink
from cardsvc.reader.purse import read_card
from cardsvc.residents import service as residents
from cardsvc.resources import Resources
from cardsvc.settings import get_settings
from cardsvc.staff import repository as staff_repo
from cardsvc.staff.auth import Role
from terminals.devices.card import VirtualCard, make_blank_card
from tests.factories import PASSWORD, create_staff, resident_id
from tests.issuance.flow import personalize_card

NAME = "诸葛亮"


async def cli(*args: str, password: str = PASSWORD) -> Result:
    """``cardsvc ARGS`` with the password from CARDSVC_STAFF_PASSWORD (as a script would)."""
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke,
        main,
        list(args),
        env={"CARDSVC_STAFF_PASSWORD": password},
        catch_exceptions=False,
    )


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def refused(result: Result, name: str) -> str:
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {name}: "), result.stderr
    return result.stderr


async def active_card(resources: Resources, rid: str, serial: str) -> tuple[int, str]:
    """An issued card made through the services (the CLI flow itself is tested above)."""
    settings = resources.settings
    async with unit_of_work(resources.sessions) as session:
        resident = await residents.register(
            session, resources.hsm, residents.ResidentIn(rid, "黄月英", "13900000000", "泰州"),
            actor="op", today=settings.local_date(clock.now()),
        )  # fmt: skip
    async with unit_of_work(resources.sessions) as session:
        application = await applications.submit(
            read_sessions(resources.engine), session, resources.hsm, settings,
            resident_id=resident.id, card_type=None, actor="op",
        )  # fmt: skip
        await applications.approve(session, application.id, actor="sup")
        card = await applications.start_production(session, settings, application.id, actor="op")
    with InProcessLink(make_blank_card(bytes.fromhex(serial))) as link:
        await personalize_card(resources, link, application.id)
    async with unit_of_work(resources.sessions) as session:
        await applications.handover(session, settings, application.id, actor="op")
    return resident.id, card.card_no


def number(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found is not None, text
    return found.group(1)


async def test_issue_a_card_by_cli(cli_env: None, resources: Resources, tmp_path: Path) -> None:
    await create_staff(resources, "op1", [Role.counter_operator])
    await create_staff(resources, "sup1", [Role.supervisor])
    rid = resident_id("321102", "19810224", "135")
    out = ok(await cli(
        "residents", "register", "--resident-id", rid, "--name", NAME, "--sex", "M",
        "--birth-date", "1981-02-24", "--phone", "13800000000", "--address", "泰州市海陵区1号",
        "--user", "op1",
    ))  # fmt: skip
    resident = number(r"resident (\d+):", out)
    assert "321***********135" in out
    assert rid not in out
    assert NAME not in out
    found = ok(await cli("residents", "find", "--resident-id", rid, "--user", "op1"))
    assert f"resident {resident}: 321***********13" in found
    assert f"{NAME[0]}**" in found
    assert NAME not in found

    out = ok(await cli("applications", "submit", "--resident", resident, "--user", "op1"))
    application = number(r"application (\d+):", out)
    assert "new standard card" in out
    assert "submitted by op1" in out
    ok(await cli("applications", "approve", application, "--user", "sup1"))
    out = ok(await cli("applications", "production", application, "--user", "op1"))
    card_no = number(r"card (\d{16})", out)
    listed = ok(await cli("applications", "list", "--status", "in_production", "--user", "sup1"))
    assert f"application {application}:" in listed
    assert f"card {card_no}" in listed

    state = tmp_path / "blank.json"
    make_blank_card(bytes.fromhex("C1C2C3C4C5C6C7C8"), state_path=state)
    out = ok(await cli(
        "counter", "personalize", "--virtual-card", str(state), "--application", application,
        "--user", "op1",
    ))  # fmt: skip
    assert "personalized on chip C1C2C3C4C5C6C7C8" in out
    card = VirtualCard.load(state)  # the state file kept what the card committed
    assert card.state.transport_key is None
    with InProcessLink(card) as link:
        snapshot = read_card(link)
    assert snapshot.card_no == card_no
    assert files.decode_text(snapshot.ef0016[2:22], "gbk") == NAME

    out = ok(await cli("applications", "handover", application, "--user", "op1"))
    assert f"card {card_no} active" in out
    async with resources.sessions() as session:
        version = await blacklist.current_version(session)
    out = ok(await cli("cards", "loss", card_no, "--user", "op1"))
    assert f"card {card_no} lost; blacklist version {version + 1}" in out
    async with resources.sessions() as session:
        assert await blacklist.current_version(session) == version + 1
        assert await blacklist.is_blacklisted(session, card_no)
    assert f"card {card_no} (ASN {card_no}): lost" in ok(
        await cli("cards", "show", card_no, "--user", "op1")
    )
    assert "audit chain intact" in ok(await cli("audit", "verify"))


async def test_card_lifecycle_by_cli(cli_env: None, resources: Resources) -> None:
    await create_staff(resources, "op2", [Role.counter_operator])
    await create_staff(resources, "sup2", [Role.supervisor])
    resident, card_no = await active_card(
        resources, resident_id("320102", "19700101", "246"), "D1D2D3D4D5D6D7D8"
    )
    assert "frozen; blacklist version 1" in ok(
        await cli("cards", "freeze", card_no, "--user", "sup2")
    )
    # freezing is a supervisor's decision
    refused(await cli("cards", "unfreeze", card_no, "--user", "op2"), "Forbidden")
    assert "active; blacklist version 2" in ok(
        await cli("cards", "unfreeze", card_no, "--user", "sup2")
    )
    ok(await cli("cards", "loss", card_no, "--user", "op2"))
    assert "active; blacklist version 4" in ok(
        await cli("cards", "recover", card_no, "--user", "op2")
    )
    stderr = refused(
        await cli("cards", "replace", card_no, "--user", "op2"), "InvalidStateTransition"
    )
    assert "active" in stderr
    ok(await cli("cards", "loss", card_no, "--user", "op2"))
    out = ok(await cli("cards", "replace", card_no, "--user", "op2"))
    replacement = number(r"replacement application (\d+) submitted", out)
    assert f"card {card_no} replaced" in out
    waiting = ok(await cli("applications", "list", "--status", "submitted", "--user", "op2"))
    assert (
        f"application {replacement}: replacement standard card for resident {resident}" in waiting
    )
    # a replaced card can be neither cancelled nor expired
    refused(await cli("cards", "cancel", card_no, "--user", "op2"), "InvalidStateTransition")
    refused(await cli("cards", "expire", card_no, "--user", "sup2"), "InvalidStateTransition")
    async with resources.sessions() as session:
        card = await cards_repo.by_no(session, card_no)
        assert card is not None
        assert card.status is CardStatus.replaced


async def test_cancel_and_expire_by_cli(cli_env: None, resources: Resources) -> None:
    await create_staff(resources, "op3", [Role.counter_operator])
    await create_staff(resources, "sup3", [Role.supervisor])
    _, cash = await active_card(
        resources, resident_id("320102", "19750303", "111"), "E1E2E3E4E5E6E7E8"
    )
    _, expiring = await active_card(
        resources, resident_id("320102", "19760404", "222"), "F1F2F3F4F5F6F7F8"
    )
    # a cash refund names the paying counter (CancelBody and the service say so)
    refused(
        await cli("cards", "cancel", cash, "--refund-to", "counter_cash", "--user", "op3"),
        "ValidationFailed",
    )
    out = ok(await cli(
        "cards", "cancel", cash, "--refund-to", "counter_cash", "--counter-code", "C07",
        "--user", "op3",
    ))  # fmt: skip
    assert f"card {cash} cancelled; blacklist version" in out
    refused(await cli("cards", "expire", expiring, "--user", "op3"), "Forbidden")
    assert f"card {expiring} expired" in ok(
        await cli("cards", "expire", expiring, "--user", "sup3")
    )
    async with resources.sessions() as session:
        assert await blacklist.is_blacklisted(session, cash)
        assert not await blacklist.is_blacklisted(session, expiring)
        cancelled = await cards_repo.by_no(session, cash)
        assert cancelled is not None
        release = await cards_repo.release_for_card(session, cancelled.id)
        assert release is not None
        assert release.refund_ref == "C07"


async def test_refusals(cli_env: None, resources: Resources) -> None:
    await create_staff(resources, "opx", [Role.counter_operator])
    await create_staff(resources, "both", [Role.counter_operator, Role.supervisor])
    await create_staff(resources, "supx", [Role.supervisor])
    await create_staff(resources, "audx", [Role.auditor])
    out = ok(await cli(
        "residents", "register", "--resident-id", resident_id("110105", "19880808", "088"),
        "--name", "张飞", "--phone", "13600000000", "--address", "涿郡", "--user", "opx",
    ))  # fmt: skip
    resident = number(r"resident (\d+):", out)
    # the same resident again: the service's duplicate rule
    stderr = refused(await cli(
        "residents", "register", "--resident-id", resident_id("110105", "19880808", "088"),
        "--name", "张飞", "--phone", "13600000000", "--address", "涿郡", "--user", "opx",
    ), "Conflict")  # fmt: skip
    assert "already registered" in stderr
    # an ID with a wrong check digit, and the sex contradicting the ID
    good = resident_id("110105", "19880808", "077")
    bad = good[:17] + ("1" if good[17] == "0" else "0")
    refused(await cli(
        "residents", "register", "--resident-id", bad, "--name", "关羽", "--phone", "13600000001",
        "--address", "解良", "--user", "opx",
    ), "InvalidResidentId")  # fmt: skip
    refused(await cli(
        "residents", "register", "--resident-id", resident_id("110105", "19880808", "077"),
        "--name", "关羽", "--sex", "F", "--phone", "13600000001", "--address", "解良", "--user", "opx",
    ), "ValidationFailed")  # fmt: skip
    # the API schema's bounds hold on the command line too
    stderr = refused(await cli(
        "residents", "register", "--resident-id", resident_id("110105", "19880808", "077"),
        "--name", "关羽", "--phone", "not-a-phone", "--address", "解良", "--user", "opx",
    ), "ValidationFailed")  # fmt: skip
    assert "phone" in stderr
    refused(
        await cli("residents", "find", "--resident-id", resident_id("110105", "19990909", "099"),
                  "--user", "opx"),
        "NotFound",
    )  # fmt: skip

    # self-approval: "both" may submit and may approve, but not its own application
    application = number(
        r"application (\d+):",
        ok(await cli("applications", "submit", "--resident", resident, "--user", "both")),
    )
    stderr = refused(
        await cli("applications", "approve", application, "--user", "both"), "Forbidden"
    )
    assert "other than the one who submitted" in stderr
    refused(
        await cli("applications", "reject", application, "--reason", "x", "--user", "both"),
        "Forbidden",
    )
    # wrong role: an operator decides nothing, an auditor submits nothing
    stderr = refused(
        await cli("applications", "approve", application, "--user", "opx"), "Forbidden"
    )
    assert "requires one of the roles: supervisor" in stderr
    refused(
        await cli("applications", "submit", "--resident", resident, "--user", "audx"), "Forbidden"
    )
    assert f"application {application}:" in ok(await cli("applications", "list", "--user", "audx"))
    # a rejected application goes no further; production needs an approved one
    out = ok(await cli(
        "applications", "reject", application, "--reason", "documents incomplete", "--user", "supx",
    ))  # fmt: skip
    assert "rejected" in out
    assert "documents incomplete" in out
    refused(
        await cli("applications", "production", application, "--user", "opx"),
        "InvalidStateTransition",
    )
    refused(await cli("cards", "show", "1234567890123456", "--user", "opx"), "ValidationFailed")
    unknown = make_card_no("3211", 10**11 - 1)
    assert "no such card" in refused(
        await cli("cards", "show", unknown, "--user", "opx"), "NotFound"
    )

    # a wrong password is refused, and the failure counts toward the lockout
    stderr = refused(
        await cli("applications", "list", "--user", "opx", password="wrong password"),
        "LoginFailed",
    )
    assert "invalid username or password" in stderr
    async with resources.sessions() as session:
        user = await staff_repo.by_username(session, "opx")
        assert user is not None
        assert user.failed_logins == 1
    async with resources.sessions() as session:
        # nothing of the refused commands was kept: one application, rejected
        from cardsvc.applications import repository as applications_repo

        rows = await applications_repo.list_by_status(session, None)
        assert [(a.id, a.status.value) for a in rows] == [(int(application), "rejected")]


async def test_counter_personalize_is_refused_outside_development(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A counter PC in production opens neither the database nor the HSM: it runs the agent."""
    database = tmp_path / "never.db"
    monkeypatch.setenv("CARDSVC_MODE", "production")
    monkeypatch.setenv("CARDSVC_DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    monkeypatch.setenv("CARDSVC_HSM_URL", "tcp://127.0.0.1:9")
    monkeypatch.setenv("CARDSVC_HSM_SECRET", "a-secret-the-command-never-uses")
    monkeypatch.setenv("CARDSVC_TOKEN_SECRET", "t" * 48)
    monkeypatch.setenv("CARDSVC_VAR_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        result = await cli("counter", "personalize", "--application", "1", "--user", "op1")
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "error: Forbidden: counter PCs hold no database or HSM credential" in result.stderr
    assert "cardsvc-agent" in result.stderr
    assert not database.exists()
