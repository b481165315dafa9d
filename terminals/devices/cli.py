"""``cardsvc card``: put a virtual card into the vpcd reader, and read what a card holds.

The simulated chip is test and demo equipment, so this group lives beside it; the chip is
imported inside the commands, so reading a real card never loads it.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from cardsvc.reader.link import CardLink, InProcessLink
from cardsvc.reader.purse import CardSnapshot, read_card


def open_virtual_card(state_file: Path) -> CardLink:
    """A virtual card's state file as a link (``--virtual-card`` of the cardsvc commands)."""
    from terminals.devices.card import VirtualCard

    return InProcessLink(VirtualCard.load(state_file))


@click.group()
def card() -> None:
    """Virtual cards and card readers."""


@card.command()
@click.option(
    "--state",
    "state_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Card state file (JSON); loaded when it exists, else created.",
)
@click.option("--blank", is_flag=True, help="Create a blank card (transport key only).")
@click.option("--chip-serial", default=None, help="Chip serial, 16 hex digits (with --blank).")
@click.option(
    "--dev-personalized", is_flag=True, help="Create a card personalized with the dev keys."
)
@click.option("--card-no", default=None, help="16-digit card number (with --dev-personalized).")
@click.option("--balance", type=int, default=0, show_default=True, help="Balance in fen.")
@click.option("--vpcd-host", default="127.0.0.1", show_default=True)
@click.option("--vpcd-port", type=int, default=35963, show_default=True)
@click.option("--t0", is_flag=True, help="Answer like a T=0 chip (61xx + GET RESPONSE).")
def emulate(
    state_file: Path | None,
    blank: bool,
    chip_serial: str | None,
    dev_personalized: bool,
    card_no: str | None,
    balance: int,
    vpcd_host: str,
    vpcd_port: int,
    t0: bool,
) -> None:
    """Insert a virtual card into the vpcd reader until Ctrl-C or SIGTERM, then remove it."""
    from terminals.devices.card import VirtualCard, make_blank_card, make_dev_personalized_card
    from terminals.devices.vpcd import VpcdCard, VpcdError

    if blank and dev_personalized:
        raise click.UsageError("choose one of --blank and --dev-personalized")
    icc: VirtualCard
    if state_file is not None and state_file.exists() and not (blank or dev_personalized):
        icc = VirtualCard.load(state_file, t0=t0)
    elif blank:
        if not chip_serial or len(chip_serial) != 16:
            raise click.UsageError("--blank needs --chip-serial with 16 hex digits")
        icc = make_blank_card(bytes.fromhex(chip_serial), state_path=state_file, t0=t0)
    elif dev_personalized:
        if not card_no:
            raise click.UsageError("--dev-personalized needs --card-no")
        serial = bytes.fromhex(chip_serial) if chip_serial else None
        icc = make_dev_personalized_card(
            card_no, balance, chip_serial=serial, state_path=state_file, t0=t0
        )
    else:
        raise click.UsageError("give --state of an existing card, --blank or --dev-personalized")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    slot = VpcdCard(icc, vpcd_host, vpcd_port)
    try:
        slot.start()
    except VpcdError as e:
        raise click.ClickException(str(e)) from e
    click.echo(
        f"card inserted at vpcd {vpcd_host}:{vpcd_port}, ATR {icc.atr.hex().upper()}", err=True
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        slot.stop()
        click.echo("card removed", err=True)


def _text(raw: bytes, encoding: str) -> str:
    return raw.rstrip(b"\x00").decode(encoding, errors="replace")


def _print_snapshot(s: CardSnapshot) -> None:
    echo = click.echo
    echo(f"ATR              {s.atr.hex().upper()}")
    echo(f"card no (ASN)    {s.card_no}")
    echo(f"city code        {s.city_code}")
    if s.blocked:
        echo(f"purse            BLOCKED ({s.blocked})")
    echo(f"balance          {s.balance} fen ({s.balance // 100}.{s.balance % 100:02d} yuan)")
    echo(f"offline counter  {s.offline_counter if s.offline_counter is not None else '-'}")
    echo(f"online counter   {s.online_counter if s.online_counter is not None else '-'}")
    echo(f"0015             {s.ef0015.hex().upper()}")
    echo(f"0016             {s.ef0016.hex().upper()}")
    echo(f"  holder         {_text(s.ef0016[2:22], 'gbk')} / {_text(s.ef0016[22:54], 'ascii')}")
    for title, records in (("purchases", s.purchases), ("loads", s.loads)):
        echo(f"{title} ({len(records)})")
        for r in records:
            line = f"  #{r.counter:<5} {r.amount:>8} fen  type {r.tx_type:02X}"
            echo(f"{line}  term {r.terminal_no}  {r.datetime14}")
    echo(f"compound records ({len(s.capp_records)})")
    for raw in s.capp_records:
        echo(f"  {raw.hex().upper()}")
    if s.ef05 is not None:
        echo(f"EF05             {s.ef05.hex().upper()}")
        ss_no, region = _text(s.ef05[0:9], "ascii"), _text(s.ef05[10:16], "ascii")
        echo(f"  ss card no     {ss_no}  region {region}")
    if s.ef06 is not None:
        echo(f"EF06             {s.ef06.hex().upper()}")
        echo(f"  holder         {_text(s.ef06[18:48], 'gbk')}  sex {_text(s.ef06[48:49], 'ascii')}")


@card.command()
@click.option(
    "--reader", default=None, help="PC/SC reader name (prefix); default the first reader."
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read a virtual card's state file in-process instead of a reader.",
)
@click.option(
    "--wait", type=float, default=5.0, show_default=True, help="Seconds to wait for a card."
)
def read(reader: str | None, state_file: Path | None, wait: float) -> None:
    """Print what a card holds: ASN, balance, counters, logs, 0015/0016, EF05/EF06."""
    from cardsvc.reader.errors import CardError

    link: CardLink
    if state_file is not None:
        link = open_virtual_card(state_file)
    else:
        from cardsvc.reader.pcsc import PcscLink

        link = PcscLink(reader, wait=wait)
    try:
        with link:
            snapshot = read_card(link)
    except CardError as e:
        raise click.ClickException(e.detail) from e
    _print_snapshot(snapshot)
