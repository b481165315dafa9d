"""Fixtures of the HSM tests: a real ``hsm-sim serve`` child process, and the contract clients.

``hsm_process_url`` (session scope) is one development-mode hsm-sim on a free port, started via
``hsm_sim.child.start_hsm_process``; ``fresh_hsm_url`` starts a private one for tests that
change keys. ``hsm_client`` runs each contract test over both backends: in-process and TCP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cardsvc.hsm import HsmClient
from cardsvc.hsm.connect import connect_hsm
from cardsvc.hsm.development import LocalHsmClient
from hsm_sim.child import start_hsm_process


@pytest.fixture(scope="session")
def hsm_process_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hsm-sim")


@pytest.fixture(scope="session")
def hsm_process_url(hsm_process_dir: Path) -> Iterator[str]:
    url, stop = start_hsm_process(hsm_process_dir)
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def fresh_hsm_url(tmp_path: Path) -> Iterator[str]:
    url, stop = start_hsm_process(tmp_path, env={"HSM_SIM_WORKERS": "1"})
    try:
        yield url
    finally:
        stop()


@pytest.fixture(params=["local", "tcp"])
async def hsm_client(request: pytest.FixtureRequest) -> AsyncIterator[HsmClient]:
    if request.param == "local":
        client: HsmClient = LocalHsmClient.development()
    else:
        client = await connect_hsm(request.getfixturevalue("hsm_process_url"))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(params=["local", "tcp"])
async def fresh_hsm_client(request: pytest.FixtureRequest) -> AsyncIterator[HsmClient]:
    """A client of an HSM of its own (the test may rotate or create keys)."""
    if request.param == "local":
        client: HsmClient = LocalHsmClient.development()
    else:
        client = await connect_hsm(request.getfixturevalue("fresh_hsm_url"))
    try:
        yield client
    finally:
        await client.close()
