"""``cardsvc serve --workers N``: the real command, several real worker processes.

The process boundary is the point here: the workers are separate processes, and ``/metrics``,
answered by any one of them, must report the requests of all of them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.online.helpers import free_port

WORKERS = 2


def healthz_count(metrics_text: str) -> int:
    pattern = r'cardsvc_http_requests_total\{[^}]*route="/healthz"[^}]*\} ([0-9.e+]+)'
    return sum(int(float(value)) for value in re.findall(pattern, metrics_text))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``cardsvc serve --workers 2`` on SQLite with the in-process HSM; (base URL, var dir)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDSVC_", "PROMETHEUS_"))}
    var_dir = tmp_path / "var"
    env.update(
        CARDSVC_MODE="development",
        CARDSVC_VAR_DIR=str(var_dir),
        CARDSVC_HSM_URL="local://dev",
        CARDSVC_LOG_LEVEL="WARNING",
    )
    command = [sys.executable, "-m", "cardsvc", "serve", "--workers", str(WORKERS)]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"cardsvc serve did not start:\n{process.communicate()[1][-3000:]}")
            time.sleep(0.1)
        yield base, var_dir
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_metrics_report_every_worker(served: tuple[str, Path]) -> None:
    base, var_dir = served
    metrics_dir = var_dir / "metrics"
    # A new connection per request: the kernel hands each to whichever worker accepts first.
    # Go on until both workers have counted a request (each then has its own counter file).
    sent = 0
    while len(list(metrics_dir.glob("counter_*.db"))) < WORKERS:
        assert sent < 2000, "one worker took every connection"
        assert httpx.get(f"{base}/healthz", headers={"Connection": "close"}).status_code == 200
        sent += 1
    for _ in range(6):  # several fetches, likely answered by both workers
        body = httpx.get(f"{base}/metrics", headers={"Connection": "close"}).text
        assert healthz_count(body) == sent + 1  # the readiness poll of the fixture too
