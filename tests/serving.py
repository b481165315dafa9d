"""A real ``cardsvc serve`` process for the tests and scripts whose point is the process boundary
(several workers, a command beside the server, schemathesis over the network)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.loopback import local
from tests.terminals.helpers import free_port


def dev_env(var_dir: Path, **more: str) -> dict[str, str]:
    """A developer's shell: this environment without any ``CARDSVC_``, ``HSM_SIM_`` or
    ``PROMETHEUS_`` setting, then development mode, SQLite and the spawned HSM under
    ``var_dir``, then ``more``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CARDSVC_", "HSM_SIM_", "PROMETHEUS_"))
    }
    env.update(
        {
            "CARDSVC_MODE": "development",
            "CARDSVC_VAR_DIR": str(var_dir),
            "CARDSVC_HSM_URL": "spawn",
            "CARDSVC_LOG_LEVEL": "WARNING",
            **more,
        }
    )
    return env


class ServerFailed(RuntimeError):
    pass


@contextmanager
def serving(
    env: dict[str, str], *args: str, ready: str = "/healthz", timeout: float = 90
) -> Iterator[str]:
    """``cardsvc serve ARGS`` on a free port with ``env``, once ``ready`` answers 200; the base
    URL. Stopped with SIGINT (as an operator would) when the block ends."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cardsvc", "serve", *args, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if local().get(f"{base}{ready}", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise ServerFailed(
                    f"cardsvc serve did not start:\n{process.communicate()[1][-3000:]}"
                )
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
