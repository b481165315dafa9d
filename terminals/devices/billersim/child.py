"""Start ``biller-sim serve`` as a child process on a free port (tests, the demo, the bench)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx


def start_biller_process(
    directory: Path, data: Mapping[str, Any], *, max_skew: float = 300.0, timeout: float = 20.0
) -> tuple[str, Callable[[], None]]:
    """(base url, stop): the simulator serving ``data``; its output goes to
    ``directory/biller-sim.log``."""
    directory.mkdir(parents=True, exist_ok=True)
    data_file = directory / "biller-sim.json"
    data_file.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    ready = directory / f"biller-sim-ready-{time.monotonic_ns()}"
    log = (directory / "biller-sim.log").open("ab")
    command = [
        sys.executable,
        "-m",
        "terminals.devices.billersim.cli",
        "serve",
        "--data",
        str(data_file),
        "--ready-file",
        str(ready),
        "--max-skew",
        str(max_skew),
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log.close()
        ready.unlink(missing_ok=True)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop()
            text = (directory / "biller-sim.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"biller-sim exited with {process.returncode}:\n{text}")
        if ready.exists():
            host, port = ready.read_text().split()
            url = f"http://{host}:{port}"
            try:
                httpx.get(f"{url}/sim/stats", timeout=2.0)
                return url, stop
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    stop()
    raise RuntimeError(f"biller-sim did not start within {timeout} s")
