"""``cardsvc serve --workers N``: the real command, several real worker processes.

The process boundary is the point here: the workers are separate processes, and ``/metrics``,
answered by any one of them, must report the requests of all of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopback import local
from tests.serving import dev_env, serving

WORKERS = 2


def healthz_count(metrics_text: str) -> int:
    pattern = r'cardsvc_http_requests_total\{[^}]*route="/healthz"[^}]*\} ([0-9.e+]+)'
    return sum(int(float(value)) for value in re.findall(pattern, metrics_text))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``cardsvc serve --workers 2`` on SQLite with the in-process HSM; (base URL, var dir)."""
    var_dir = tmp_path / "var"
    env = dev_env(var_dir, CARDSVC_HSM_URL="local://dev")
    with serving(env, "--workers", str(WORKERS)) as base:
        yield base, var_dir


def test_metrics_report_every_worker(served: tuple[str, Path]) -> None:
    base, var_dir = served
    metrics_dir = var_dir / "metrics"
    # A new connection per request: the kernel hands each to whichever worker accepts first.
    # Go on until both workers have counted a request (each then has its own counter file).
    sent = 0
    while len(list(metrics_dir.glob("counter_*.db"))) < WORKERS:
        assert sent < 2000, "one worker took every connection"
        assert local().get(f"{base}/healthz", headers={"Connection": "close"}).status_code == 200
        sent += 1
    for _ in range(6):  # several fetches, likely answered by both workers
        body = local().get(f"{base}/metrics", headers={"Connection": "close"}).text
        assert healthz_count(body) == sent + 1  # the readiness poll of the fixture too
