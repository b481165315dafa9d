"""Fixtures of the bills tests: one ``biller-sim`` process for the session, reset per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from terminals.devices.billersim.child import start_biller_process
from tests.bills.sim import SimControl, data_set


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
