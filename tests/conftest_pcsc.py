"""PC/SC fixtures: pcscd with the vpcd virtual reader, and card links over it or in-process.

Imported by ``tests/terminals/devices/conftest.py`` and ``tests/reader/conftest.py``. When pcscd or vpcd
is missing, ``pcsc`` tests skip, unless ``CARDSVC_REQUIRE_PCSC=1`` (CI), where they fail.
pcscd is started here (``pcscd --foreground``) when it is not already running, and stopped at
the end of the session if this fixture started it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from cardsvc.reader.link import CardLink, InProcessLink
from terminals.devices.apdu import SimulatedIcc
from terminals.devices.card import VirtualCard
from terminals.devices.vpcd import VpcdCard

VPCD_READER = "Virtual PCD 00 00"
VPCD_CONFIG = Path("/etc/reader.conf.d/vpcd")
REQUIRE_PCSC = os.environ.get("CARDSVC_REQUIRE_PCSC") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRE_PCSC:
        pytest.fail(f"CARDSVC_REQUIRE_PCSC=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _vpcd_readers() -> list[str] | None:
    from cardsvc.reader.errors import CardError
    from cardsvc.reader.pcsc import list_readers

    try:
        return [r for r in list_readers() if r.startswith("Virtual PCD")]
    except CardError:
        return None


@pytest.fixture(scope="session")
def pcscd() -> Iterator[str]:
    """A running pcscd with the vpcd reader; yields the reader name of vpcd slot 0."""
    try:
        import smartcard.scard  # noqa: F401
    except ImportError as e:  # no libpcsclite
        _unavailable(f"pyscard cannot load: {e}")
    proc: subprocess.Popen[bytes] | None = None
    readers = _vpcd_readers()
    if not readers:
        exe = shutil.which("pcscd") or (
            "/usr/sbin/pcscd" if Path("/usr/sbin/pcscd").exists() else None
        )
        if exe is None or not VPCD_CONFIG.exists():
            _unavailable("pcscd or the vpcd driver (vsmartcard-vpcd) is not installed")
        assert exe is not None
        proc = subprocess.Popen(
            [exe, "--foreground"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not readers and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
            readers = _vpcd_readers()
        if not readers:
            proc.terminate()
            proc.wait(5)
            _unavailable("pcscd started but the vpcd reader did not appear")
    assert readers is not None
    yield VPCD_READER if VPCD_READER in readers else readers[0]
    if proc is not None:
        proc.terminate()
        proc.wait(10)


@contextmanager
def inserted(icc: SimulatedIcc, reader: str) -> Iterator[VpcdCard]:
    """Put ``icc`` into the vpcd reader; take it out (and wait until pcscd saw it) afterwards."""
    from cardsvc.reader.pcsc import wait_for_card, wait_for_removal

    slot = VpcdCard(icc)
    slot.start()
    try:
        wait_for_card(reader, 5.0)
        yield slot
    finally:
        slot.stop()
        wait_for_removal(reader, 5.0)


Connect = Callable[[VirtualCard], AbstractContextManager[CardLink]]


@pytest.fixture(params=["inprocess", pytest.param("pcsc", marks=pytest.mark.pcsc)])
def connect(request: pytest.FixtureRequest) -> Connect:
    """``with connect(card) as link:`` a CardLink to ``card``, in-process or through pcscd+vpcd."""
    if request.param == "inprocess":

        @contextmanager
        def direct(card: VirtualCard) -> Iterator[CardLink]:
            with InProcessLink(card) as link:
                yield link

        return direct
    reader: str = request.getfixturevalue("pcscd")

    @contextmanager
    def through_pcscd(card: VirtualCard) -> Iterator[CardLink]:
        from cardsvc.reader.pcsc import PcscLink

        with inserted(card, reader), PcscLink(reader, wait=5.0) as link:
            yield link

    return through_pcscd


@pytest.fixture
def reconnect(
    connect: Connect, request: pytest.FixtureRequest
) -> Callable[[VirtualCard], CardLink]:
    """After a torn transaction: a fresh link to the same card (the card is tapped again)."""
    if request.node.callspec.params["connect"] == "inprocess":
        return lambda card: InProcessLink(card).__enter__()
    from cardsvc.reader.pcsc import PcscLink

    reader: str = request.getfixturevalue("pcscd")

    def again(card: VirtualCard) -> CardLink:
        # The torn card is re-inserted by its vpcd slot; pcscd may still hold the old insertion
        # for a moment, so retry until the card answers (a terminal re-polls the same way).
        from cardsvc.reader.errors import CardError

        deadline = time.monotonic() + 5.0
        while True:
            link = PcscLink(reader, wait=5.0)
            try:
                link.connect()
                link.transmit(bytes.fromhex("00A40000023F00"))
            except CardError:
                link.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            request.addfinalizer(link.close)
            return link

    return again
