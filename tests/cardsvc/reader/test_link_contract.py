"""One contract for every CardLink: in-process and pyscard through pcscd + vpcd."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cardsvc.errors import DomainError
from cardsvc.reader.errors import (
    CardError,
    CardRemoved,
    InsufficientBalance,
    MacInvalid,
    NoCard,
    PinWrong,
    ReaderBusy,
    error_for_sw,
)
from cardsvc.reader.link import CardLink, command
from cardsvc.reader.purse import read_card
from terminals.devices.card import VirtualCard, make_dev_personalized_card
from terminals.devices.cli import card as card_group
from tests.conftest_pcsc import Connect, inserted

H = bytes.fromhex
CARD_NO = "3211000000000039"
SERIAL = H("C1C2C3C4C5C6C7C8")


def make(t0: bool = False, path: Path | None = None) -> VirtualCard:
    return make_dev_personalized_card(CARD_NO, 1234, chip_serial=SERIAL, t0=t0, state_path=path)


@pytest.mark.parametrize("t0", [False, True], ids=["direct", "t0"])
def test_transmit_contract(connect: Connect, t0: bool) -> None:
    with connect(make(t0)) as link:
        assert isinstance(link, CardLink)
        assert link.atr()[-8:] == SERIAL
        fci, sw = link.transmit(H("00A4040009A00000000386980701"))
        assert sw == 0x9000
        assert fci[:2] == H("6F2E")
        data, sw = link.transmit(H("00B0950020"))  # Le too long: 6C1E → resent with Le 1E
        assert (len(data), sw) == (30, 0x9000)
        data, sw = link.transmit(H("00B201C400"))
        assert (data, sw) == (b"", 0x6A83)
        r = command(link, H("805001020B01000000010000000000000F"))
        assert r[:4] == (1234).to_bytes(4, "big")
        assert len(r) == 15


def test_typed_errors(connect: Connect) -> None:
    with connect(make()) as link:
        command(link, H("00A4040009A00000000386980701"))
        with pytest.raises(InsufficientBalance) as e:
            command(link, H("805001020B01000004D3000000000000"))
        assert e.value.sw == 0x9401
        assert isinstance(e.value, CardError)
        assert isinstance(e.value, DomainError)
        with pytest.raises(PinWrong) as pin:
            command(link, H("0020000003999999"))
        assert pin.value.tries_left == 2


def test_torn_command_is_card_removed(connect: Connect) -> None:
    card = make()
    with connect(card) as link:
        card.tear_next_commit()
        with pytest.raises(CardRemoved):
            link.transmit(H("0020000003999999"))  # the PIN-try commit happens, the answer is lost
    assert card.state.pin_tries == 2


def test_sw_table() -> None:
    assert type(error_for_sw(0x9302)) is MacInvalid
    assert error_for_sw(0x63C1).detail.endswith("1 tries left")
    assert error_for_sw(0x6F00).sw == 0x6F00


@pytest.mark.pcsc
def test_pcsc_reader_listing_waiting_and_exclusivity(pcscd: str) -> None:
    from cardsvc.reader.pcsc import PcscLink, list_readers, wait_for_card

    assert pcscd in list_readers()
    with pytest.raises(NoCard):
        wait_for_card(pcscd, timeout=0.3)
    with inserted(make(), pcscd), PcscLink(pcscd, wait=2) as first:
        with pytest.raises(ReaderBusy):
            PcscLink(pcscd).connect()
        assert first.transmit(H("805C000204"))[1] == 0x6985  # nothing selected yet


def test_cli_read_state_file(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    make(path=path)
    result = CliRunner().invoke(card_group, ["read", "--state", str(path)])
    assert result.exit_code == 0, result.output
    assert "3211000000000039" in result.output
    assert "1234 fen" in result.output
    assert "offline counter  0" in result.output


@pytest.mark.pcsc
def test_cli_emulate_and_read_through_pcscd(pcscd: str, tmp_path: Path) -> None:
    from cardsvc.reader.pcsc import PcscLink, wait_for_card, wait_for_removal

    state = tmp_path / "emulated.json"
    code = "from terminals.devices.cli import card; card()"
    args = [
        "emulate",
        "--state",
        str(state),
        "--dev-personalized",
        "--card-no",
        CARD_NO,
        "--balance",
        "777",
    ]
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=os.environ.copy())
    try:
        wait_for_card(pcscd, timeout=15)
        with PcscLink(pcscd) as link:
            snapshot = read_card(link)
        assert snapshot.card_no == CARD_NO
        assert snapshot.balance == 777
        result = CliRunner().invoke(card_group, ["read", "--reader", pcscd])
        assert result.exit_code == 0, result.output
        assert "777 fen" in result.output
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    wait_for_removal(pcscd, timeout=5)
    assert VirtualCard.load(state).state.balance == 777
