"""Fixtures of the bills tests: one ``biller-sim`` process for the session, reset per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from terminals.devices.billersim.child import start_biller_process
from tests.bills.sim import SimControl, data_set
from tests.online.helpers import free_port


@pytest.fixture(scope="session")
def biller_sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, stop = start_biller_process(Path(tmp_path_factory.mktemp("biller-sim")), data_set())
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def sim(biller_sim_url: str) -> Iterator[SimControl]:
    control = SimControl(biller_sim_url)
    control.reset()
    yield control
    control.reset()


@pytest.fixture(scope="session")
def callback_port() -> int:
    """The port the tests' API listens on for the simulator's callbacks (one per process)."""
    return free_port()


@pytest.fixture(scope="session")
def paying_sim_url(tmp_path_factory: pytest.TempPathFactory, callback_port: int) -> Iterator[str]:
    """A simulator for the payment tests: it calls back the API on ``callback_port``, and it
    accepts timestamps weeks from its clock, because those tests move the host's clock on to
    reach the 15-minute and 24-hour limits and the 30 days of a hold."""
    url, stop = start_biller_process(
        Path(tmp_path_factory.mktemp("biller-sim-pay")),
        data_set(f"http://127.0.0.1:{callback_port}/api/v1/bills/callbacks"),
        max_skew=40 * 86400,
    )
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def paying_sim(paying_sim_url: str) -> Iterator[SimControl]:
    control = SimControl(paying_sim_url)
    control.reset()
    yield control
    control.reset()
