"""The command line refuses in one way (``error: <Name>: <detail>``, exit status 1, never a
traceback), starts no HSM for a command that touches no key, and in development shares the
running spawned HSM of its var dir (``cardsvc serve`` beside it) instead of starting a second one
on the same key store and audit log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cardsvc.cli import main
from cardsvc.settings import get_settings
from hsm_sim.audit import verify_file
from hsm_sim.lock import STATE_BUSY_EXIT, StateLock, holder
from tests.loopback import local
from tests.serving import dev_env, serving
from tests.terminals.helpers import free_port

PASSWORD = "correct horse battery"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        get_settings.cache_clear()


def refused(result: Result, name: str) -> str:
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {name}: "), result.stderr
    assert "Traceback" not in result.output
    return result.stderr


@pytest.fixture
def developer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment of ``dev_env`` in this process, the schema upgraded; the var dir."""
    var_dir = tmp_path / "var"
    for name in [k for k in os.environ if k.startswith(("CARDSVC_", "HSM_SIM_"))]:
        monkeypatch.delenv(name)
    for name, value in dev_env(var_dir, CARDSVC_ADMIN_PASSWORD=PASSWORD).items():
        monkeypatch.setenv(name, value)
    assert run("db", "upgrade").exit_code == 0
    return var_dir


def test_staff_refusals_are_one_line(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARDSVC_ADMIN_PASSWORD", PASSWORD)
    assert run("staff", "create-admin", "--username", "admin").exit_code == 0
    detail = refused(run("staff", "create-admin", "--username", "admin"), "Conflict")
    assert "'admin' already exists" in detail
    short = run("staff", "create-admin", "--username", "root2", env={"CARDSVC_ADMIN_PASSWORD": "x"})
    assert "at least 10 characters" in refused(short, "ValidationFailed")
    assert "x" not in refused(short, "ValidationFailed").split(":", 2)[2].replace("characters", "")
    bad_name = run("staff", "create-admin", "--username", "a b")
    assert "username" in refused(bad_name, "ValidationFailed")


def test_a_command_that_touches_no_key_starts_no_hsm(developer: Path) -> None:
    assert run("staff", "create-admin", "--username", "admin").exit_code == 0
    created = run("staff", "create", "--username", "sup", "--role", "supervisor",
                  env={"CARDSVC_STAFF_NEW_PASSWORD": PASSWORD})  # fmt: skip
    assert created.exit_code == 0, created.output
    audit_log = developer / "hsm" / "audit.log"
    assert not audit_log.exists()
    assert not (developer / "hsm" / "keystore.json").exists()
    # One that does touch a key starts one, for as long as it runs.
    sealed = run("audit", "seal")
    assert sealed.exit_code == 0, sealed.output
    assert "2 entries sealed" in sealed.stdout
    assert commands(audit_log).count("AUDIT_CHECKPOINT") == 1
    assert holder(audit_log) is None


def test_outages_and_settings_are_refusals(developer: Path) -> None:
    closed = f"tcp://127.0.0.1:{free_port()}"
    detail = refused(run("audit", "verify", env={"CARDSVC_HSM_URL": closed}),
                     "DependencyUnavailable")  # fmt: skip
    assert detail.startswith("error: DependencyUnavailable: the HSM is unavailable")
    down = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none"
    detail = refused(
        run("staff", "create-admin", "--username", "admin", env={"CARDSVC_DATABASE_URL": down}),
        "DependencyUnavailable",
    )
    assert "the database is unavailable" in detail
    production = {"CARDSVC_MODE": "production", "CARDSVC_TOKEN_SECRET": "s3cret-never-shown"}
    detail = refused(run("audit", "verify", env=production), "SettingsRefused")
    assert "CARDSVC_HSM_URL must name a running HSM" in detail
    assert "s3cret-never-shown" not in detail


def test_a_holder_that_does_not_answer_is_refused(developer: Path) -> None:
    hsm_dir = developer / "hsm"
    squatter = StateLock([hsm_dir / "keystore.json", hsm_dir / "audit.log"])
    try:
        squatter.publish("127.0.0.1", free_port())  # holds the files, answers nothing
        detail = refused(run("audit", "verify"), "DependencyUnavailable")
        assert f"hsm-sim process {os.getpid()}, which does not answer" in detail
    finally:
        squatter.release()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """``cardsvc serve`` in development on a var dir of its own, with its spawned HSM."""
    var_dir = tmp_path / "var"
    env = dev_env(var_dir, CARDSVC_AUDIT_SEAL_INTERVAL_SECONDS="0.2",
                  CARDSVC_ADMIN_PASSWORD=PASSWORD)  # fmt: skip
    with serving(env, ready="/readyz") as base:
        yield base, var_dir, env


def commands(audit_log: Path) -> list[str]:
    return [json.loads(line)["cmd"] for line in audit_log.read_text().splitlines()]


def test_a_command_beside_serve_uses_its_hsm(
    served: tuple[str, Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process boundary is the point: the server's child hsm-sim holds the var dir's key
    store and audit log; a command of the same var dir talks to it, and a second simulator on
    those files refuses to start."""
    base, var_dir, env = served
    audit_log = var_dir / "hsm" / "audit.log"
    running = holder(audit_log)
    assert running is not None
    assert running.url is not None
    for name in [k for k in os.environ if k.startswith(("CARDSVC_", "HSM_SIM_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert run("staff", "create-admin", "--username", "admin").exit_code == 0
    before = commands(audit_log)
    verified = run("audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert "audit chain intact: 1 entries" in verified.stdout
    assert commands(audit_log).count("AUDIT_VERIFY") > before.count("AUDIT_VERIFY")
    assert holder(audit_log) == running  # the same one simulator, still running
    assert local().get(f"{base}/readyz", timeout=5).status_code == 200

    second = subprocess.run(
        [sys.executable, "-m", "hsm_sim", "serve", "--port", "0", "--dev-keys"],
        env={
            **env,
            "HSM_SIM_MODE": "development",
            "HSM_SIM_KEYSTORE": str(var_dir / "hsm" / "keystore.json"),
            "HSM_SIM_AUDIT_LOG": str(audit_log),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == STATE_BUSY_EXIT, second.stderr
    assert f"held by hsm-sim process {running.pid}" in second.stderr
    assert verify_file(audit_log).ok
