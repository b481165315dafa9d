"""The two console scripts list their commands, and the demo runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from cardsvc.cli import main
from cardsvc.settings import get_settings


def test_cardsvc_help_lists_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "db", "demo"):
        assert command in result.output


def test_db_help_lists_schema_commands() -> None:
    result = CliRunner().invoke(main, ["db", "--help"])
    assert result.exit_code == 0
    for command in ("upgrade", "downgrade", "current", "check"):
        assert command in result.output


def test_hsm_sim_help_lists_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hsm_sim", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout


def test_db_upgrade_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    env = {**os.environ, "CARDSVC_MODE": "development", "CARDSVC_VAR_DIR": str(tmp_path)}
    env.pop("CARDSVC_DATABASE_URL", None)
    get_settings.cache_clear()
    result = CliRunner(env=env).invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cardsvc.db").exists()


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """`make demo` in miniature: a fresh directory, the embedded defaults, exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDSVC_")}
    result = subprocess.run(
        [sys.executable, "-m", "cardsvc", "demo", "--var-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Demo finished: every step succeeded." in result.stdout
    assert "sealed by the HSM and proved" in result.stdout
    assert "8 cards issued and loaded at the desk with 30.00 yuan cash each" in result.stdout
