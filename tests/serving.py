"""A real ``cardsvc serve`` process for the tests and scripts whose point is the process boundary
(several workers, a command beside the server, schemathesis over the network)."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.loopback import local
from tests.processes import start_cardsvc
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
    URL. Stopped with SIGINT (as an operator would) when the block ends. The process is forked
    from the fork server of :mod:`tests.processes`, which has imported the code base already."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cardsvc-serve-") as directory:
        errors = Path(directory) / "stderr"
        process = start_cardsvc(
            "serve", *args, "--port", str(port), env=env, stdout=os.devnull, stderr=errors
        )
        assert process.pid is not None
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if local().get(f"{base}{ready}", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.exitcode is not None or time.monotonic() > deadline:
                    process.kill()
                    process.join()
                    raise ServerFailed(
                        f"cardsvc serve did not start:\n{errors.read_text()[-3000:]}"
                    )
                time.sleep(0.1)
            yield base
        finally:
            if process.exitcode is None:
                os.kill(process.pid, signal.SIGINT)
                process.join(30)
            if process.exitcode is None:
                process.kill()
                process.join()
