"""``hsm-sim`` command line: serve, audit verify, keys list, LMK component ceremony help."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from hsm_sim.audit import verify_file
from hsm_sim.errors import HsmError
from hsm_sim.keystore import KeyStoreError, Lmk, read_metadata
from hsm_sim.lock import STATE_BUSY_EXIT, StateBusy
from hsm_sim.settings import HsmSettings


def _settings() -> HsmSettings:
    try:
        return HsmSettings()
    except ValidationError as exc:
        raise click.ClickException(f"configuration refused: {exc}") from exc


@click.group()
def main() -> None:
    """HSM simulator of the citizen-card backend (DESIGN §7)."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9500, type=int, show_default=True, help="0 picks a free port")
@click.option(
    "--dev-keys", is_flag=True, help="load the development key set (development mode only)"
)
@click.option(
    "--ready-file", type=click.Path(path_type=Path), help="write 'host port' here once listening"
)
def serve(host: str, port: int, dev_keys: bool, ready_file: Path | None) -> None:
    """Serve the HSM protocol over TCP. Settings come from HSM_SIM_* variables."""
    from hsm_sim.server import serve as run_server

    settings = _settings()
    if dev_keys and not settings.development:
        raise click.ClickException(
            "--dev-keys is refused outside development mode (HSM_SIM_MODE=development)"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def run() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            if task is not None:
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_server(settings, host, port, dev_keys=dev_keys, ready_file=ready_file)

    try:
        asyncio.run(run())
    except StateBusy as exc:
        click.echo(f"Error: {exc}: one hsm-sim per key store and audit log", err=True)
        sys.exit(STATE_BUSY_EXIT)
    except (HsmError, KeyStoreError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@click.option(
    "--log", "log_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def audit_verify(log_path: Path) -> None:
    """Check every entry's hash and the chain; exit 1 on a changed or removed entry."""
    report = verify_file(log_path)
    if not report.ok:
        click.echo(
            f"audit log BROKEN after {report.entries} good entries: {report.problem}", err=True
        )
        sys.exit(1)
    click.echo(f"audit log ok: {report.entries} entries, head {report.head}")


@main.group()
def keys() -> None:
    """Key store metadata (no LMK needed; material stays encrypted)."""


@keys.command("list")
@click.option("--keystore", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def keys_list(keystore: Path | None, as_json: bool) -> None:
    env_path = os.environ.get("HSM_SIM_KEYSTORE")
    path = keystore or (Path(env_path) if env_path else None)
    if path is None:
        raise click.ClickException("give --keystore or set HSM_SIM_KEYSTORE")
    items = read_metadata(path)
    if as_json:
        click.echo(json.dumps(items, indent=1))
        return
    click.echo(f"{'label':<12} {'ver':>3} {'usage':<20} {'algorithm':<12} {'state':<12} kcv")
    for item in items:
        click.echo(
            f"{item['label']:<12} {item['version']:>3} {item['usage']:<20} {item['algorithm']:<12} "
            f"{item['state']:<12} {item['kcv']}"
        )


@main.group("lmk-components")
def lmk_components() -> None:
    """Key ceremony help for the LMK (XOR of 2 or 3 components)."""


@lmk_components.command("generate")
@click.option("--count", type=click.IntRange(2, 3), default=3, show_default=True)
def lmk_generate(count: int) -> None:
    """Print fresh random components, one per custodian, with the check value of the result.

    Each custodian keeps one component; the HSM gets them as HSM_SIM_LMK_COMPONENTS=c1,c2[,c3].
    """
    components = [secrets.token_hex(32).upper() for _ in range(count)]
    for i, component in enumerate(components, start=1):
        click.echo(f"component {i}: {component}")
    click.echo(f"LMK check value: {Lmk(components).check_value}")


@lmk_components.command("check")
@click.argument("components", nargs=-1, required=True)
def lmk_check(components: tuple[str, ...]) -> None:
    """Print the check value of the LMK these components form (compare with the key store)."""
    try:
        click.echo(Lmk(components).check_value)
    except KeyStoreError as exc:
        raise click.ClickException(str(exc)) from exc
