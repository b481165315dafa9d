"""``cardsvc-agent``: what the clerk runs on the counter PC (README, "The counter agent").

Configured by its options or the environment (``CARDSVC_AGENT_API_URL``,
``CARDSVC_AGENT_CA_FILE``, ``CARDSVC_AGENT_USER``, ``CARDSVC_AGENT_PASSWORD``; the password is
asked for when not given). Every line it prints is for the clerk: what to do, what is happening,
and after a failure what to do next. Exit status 0 when the work is done, 1 otherwise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from cardsvc.agent.api import Api, ApiRefused, ApiUnreachable, Login
from cardsvc.reader.errors import CardError, CardRemoved, NoCard, ReaderUnavailable
from cardsvc.reader.relay import relay

if TYPE_CHECKING:  # pyscard loads the PC/SC library: imported when a command needs a reader
    from cardsvc.reader.pcsc import PcscLink

SESSIONS = "/api/v1/personalization/sessions"
# What the clerk does next after a refusal, by the API's error name.
NEXT_STEP = {
    "NotAuthenticated": "check the user name and password, then run the command again",
    "Forbidden": "this needs a counter operator's (or a supervisor's) login",
    "OtherCardPresented": "put that card in the reader and run the command again",
    "ChipInUse": "present a blank card",
    "SessionSpoiled": "ask a supervisor to abandon the session, then use a new blank card",
    "InvalidStateTransition": "check the application's state at the counter",
    "NotFound": "check the number",
    "Conflict": "check the card and the application at the counter",
    "WrongCard": "present the card named",
    "PinPadUnavailable": "sign the PIN pad in (switch it off and on), then try again",
    "PinBlockUnreadable": "check the PIN pad's number and that it is signed in, then try again",
    "PinRefused": "the holder chooses another PIN and types it again",
}


def say(text: str) -> None:
    click.echo(text)


def fail(text: str, then: str) -> NoReturn:
    click.echo(f"FAILED: {text}", err=True)
    click.echo(f"What to do: {then}.", err=True)
    raise SystemExit(1)


def mask(card_no: str) -> str:
    return card_no[:4] + "*" * (len(card_no) - 8) + card_no[-4:]


class Counter:
    """The agent's configuration: the API and the clerk; the reader comes per command."""

    def __init__(self, api_url: str, ca_file: Path | None, user: str, password: str | None) -> None:
        self.api = Api(
            api_url,
            Login(user, lambda: password or click.prompt("Password", hide_input=True)),
            ca_file=ca_file,
            on_retry=lambda n, why: say(f"{why}; trying again ({n})..."),
        )

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return self.api.call(method, path, body)
        except ApiRefused as exc:
            fail(f"{exc.name}: {exc.detail}", NEXT_STEP.get(exc.name, "call a supervisor"))
        except ApiUnreachable as exc:
            fail(
                f"{exc}",
                "check the network; run the same command again (with the same card): "
                "the server resumes where it stopped",
            )


def readers() -> list[str]:
    from cardsvc.reader.pcsc import list_readers

    try:
        return list_readers()
    except ReaderUnavailable as exc:
        fail(exc.detail, "check that the reader is plugged in and pcscd is running")


def choose_reader(wanted: str | None) -> str:
    """A reader by index (as ``readers`` lists them) or by name (or the start of one)."""
    names = readers()
    if not names:
        fail("no card reader is connected", "plug the reader in and run the command again")
    if wanted is None:
        if len(names) > 1:
            fail(f"{len(names)} readers are connected", "choose one with --reader (see: readers)")
        return names[0]
    if wanted.isdigit():
        if int(wanted) >= len(names):
            fail(f"there is no reader {wanted}", "choose one of those `readers` lists")
        return names[int(wanted)]
    for name in names:
        if name == wanted or name.startswith(wanted):
            return name
    fail(f"there is no reader named {wanted!r}", "choose one of those `readers` lists")


@contextmanager
def card_in(reader: str, wait: float, what: str) -> Iterator[PcscLink]:
    """Ask for the card, wait for it, and hold it exclusively."""
    from cardsvc.reader.pcsc import PcscLink, wait_for_card

    say(f"Insert {what} in the reader {reader!r}.")
    try:
        wait_for_card(reader, wait)
        link = PcscLink(reader)
        link.connect()
    except NoCard:
        fail(f"no card in {wait:g} s", f"insert {what} and run the command again")
    except CardError as exc:
        fail(exc.detail, "take the card out, put it back and run the command again")
    try:
        yield link
    finally:
        link.close()


def reconnect(reader: str, wait: float) -> PcscLink:
    """The card came out mid-way: wait for it to come back."""
    from cardsvc.reader.pcsc import PcscLink, wait_for_card

    say("The card was removed. Put the same card back in the reader; do not remove it again.")
    deadline = time.monotonic() + wait
    while True:
        try:
            wait_for_card(reader, max(0.1, deadline - time.monotonic()))
            link = PcscLink(reader)
            link.connect()
            return link
        except NoCard:
            fail(
                "the card did not come back",
                "run the same command again with the same card: it resumes where it stopped",
            )
        except CardError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@click.group()
@click.option("--api", "api_url", envvar="CARDSVC_AGENT_API_URL", required=True,
              help="The API's base URL, e.g. https://cardsvc.example:8443 (CARDSVC_AGENT_API_URL).")  # fmt: skip
@click.option("--ca", "ca_file", envvar="CARDSVC_AGENT_CA_FILE", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA certificate file to verify the API's TLS certificate (CARDSVC_AGENT_CA_FILE); default: the system's.")  # fmt: skip
@click.option("--user", envvar="CARDSVC_AGENT_USER", required=True,
              help="The clerk's staff login (CARDSVC_AGENT_USER); the password is asked for, or CARDSVC_AGENT_PASSWORD.")  # fmt: skip
@click.pass_context
def agent(ctx: click.Context, api_url: str, ca_file: Path | None, user: str) -> None:
    """The counter agent: personalizes and serves cards through the API (no database, no HSM)."""
    ctx.obj = Counter(api_url, ca_file, user, os.environ.get("CARDSVC_AGENT_PASSWORD"))
    ctx.call_on_close(ctx.obj.api.close)


@agent.command("readers")
def readers_cmd() -> None:
    """List the card readers with their index (for --reader)."""
    names = readers()
    if not names:
        say("No card reader is connected.")
    for n, name in enumerate(names):
        say(f"{n}: {name}")


reader_option = click.option(
    "--reader",
    default=None,
    help="Reader index (as `readers` lists them) or name; default: the only one.",
)
wait_option = click.option(
    "--wait", default=60.0, show_default=True, help="Seconds to wait for the card."
)


@agent.command("personalize")
@click.option("--application", "application_id", type=click.IntRange(1, 2**63 - 1), required=True)
@reader_option
@wait_option
@click.pass_obj
def personalize(counter: Counter, application_id: int, reader: str | None, wait: float) -> None:
    """Personalize the blank card in the reader for an approved application (resumable)."""
    name = choose_reader(reader)
    with card_in(name, wait, f"the blank card for application {application_id}") as link:
        say("Do not remove the card until you are told.")
        run_session(counter, link, application_id, name, lambda: reconnect(name, wait))


def run_session(
    counter: Counter,
    link: PcscLink,
    application_id: int,
    reader: str,
    reconnect: Callable[[], PcscLink],
) -> None:
    started = time.monotonic()

    def start(card: PcscLink) -> dict[str, Any]:
        turn: dict[str, Any] = counter.call(
            "POST",
            SESSIONS,
            {"application_id": application_id, "atr": card.atr().hex(), "reader": reader[:128]},
        )
        if turn["resumed"]:
            say(f"Resuming the card {mask(turn['card_no'])} (chip {turn['chip_serial']}).")
        else:
            say(f"Personalizing card {mask(turn['card_no'])} on chip {turn['chip_serial']}.")
        return turn

    turn, restarts = start(link), 0
    while turn["state"] == "running":
        say(f"step {turn['step'] + 1} of {turn['steps']}")
        try:
            responses = relay(link, [bytes.fromhex(c) for c in turn["commands"]])
        except CardRemoved:
            link.close()
            link = reconnect()
            turn = start(link)
            continue
        turn = counter.call(
            "POST",
            f"{SESSIONS}/{turn['session_id']}/steps",
            {"seq": turn["seq"], "responses": [r.hex() for r in responses]},
        )
        if turn["state"] == "interrupted" and restarts == 0:
            # One more go from the start of the plan: a refusal is often a challenge gone stale.
            restarts += 1
            say(f"The card refused a step ({turn['detail']}); starting again.")
            turn = start(link)
    if turn["state"] == "done":
        say(
            f"Done in {time.monotonic() - started:.1f} s: card {mask(turn['card_no'])} is "
            "personalized. Remove the card; it is ready to hand over."
        )
        return
    if turn["state"] == "interrupted":
        fail(
            turn["detail"],
            "run the same command again with the same card; if it fails again, ask a supervisor",
        )
    fail(
        turn["detail"],
        "keep this card apart; ask a supervisor to abandon the session, then use a new blank card",
    )


def _record(counter: Counter, card_no: str) -> dict[str, Any]:
    record: dict[str, Any] = counter.call("GET", f"/api/v1/cards/{card_no}")
    return record


def _presented(link: PcscLink) -> tuple[str, str]:
    """(card number, chip serial) of the card in the reader."""
    from cardsvc.reader.purse import read_binary_sfi, select_purse

    try:
        select_purse(link)
    except CardError as exc:
        if exc.sw != 0x6A81:  # a blocked purse still shows its files
            raise
    return read_binary_sfi(link, 0x15)[12:20].hex(), link.atr()[-8:].hex().upper()


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d} yuan"


@agent.command("read")
@reader_option
@wait_option
@click.pass_obj
def read(counter: Counter, reader: str | None, wait: float) -> None:
    """Read the presented card (chip, card number, balance, recent purchases and loads) and show
    its record."""
    from cardsvc.reader.purse import read_card

    name = choose_reader(reader)
    with card_in(name, wait, "the card") as link:
        try:
            snap = read_card(link)
        except CardError as exc:
            fail(exc.detail, "take the card out, put it back and run the command again")
    chip = snap.atr[-8:].hex().upper()
    say(f"chip serial   {chip}")
    say(f"card number   {snap.card_no}")
    say(f"balance       {_yuan(snap.balance)} on the chip")
    if snap.blocked:
        say(f"purse         blocked ({snap.blocked})")
    say(f"counters      offline {snap.offline_counter}, online {snap.online_counter}")
    for title, records in (("purchases", snap.purchases), ("loads", snap.loads)):
        say(f"last {title}:" if records else f"last {title}: none")
        for r in records[:5]:
            when = f"{r.datetime14[:4]}-{r.datetime14[4:6]}-{r.datetime14[6:8]} {r.datetime14[8:10]}:{r.datetime14[10:12]}"
            say(f"  #{r.counter:<5} {when}  {_yuan(r.amount):>14}  terminal {r.terminal_no}")
    record = _record(counter, snap.card_no)
    say(f"on record     {record['status']}, {record['card_type']}, expires {record['expires_on']}")
    say(f"balance       {_yuan(record['float_balance'])} on record")
    if record["chip_serial"] != chip:
        say(
            f"WARNING: this chip is not the one on record ({record['chip_serial']}): keep the card and call a supervisor."
        )


@agent.command("handover")
@click.option("--application", "application_id", type=click.IntRange(1, 2**63 - 1), required=True)
@reader_option
@wait_option
@click.pass_obj
def handover(counter: Counter, application_id: int, reader: str | None, wait: float) -> None:
    """Hand the personalized card over: the card in the reader must be the application's."""
    name = choose_reader(reader)
    application = counter.call("GET", f"/api/v1/applications/{application_id}")
    with card_in(name, wait, f"the card of application {application_id}") as link:
        try:
            card_no, chip = _presented(link)
        except CardError as exc:
            fail(exc.detail, "take the card out, put it back and run the command again")
    if card_no != application["card_no"] or _record(counter, card_no)["chip_serial"] != chip:
        fail(
            f"the card in the reader is not the card of application {application_id}",
            "find the card personalized for this application",
        )
    card = counter.call("POST", f"/api/v1/applications/{application_id}/handover")
    say(f"Card {mask(card['card_no'])} is {card['status']}: hand it to the holder.")


def _purse_lock(
    counter: Counter, reader: str | None, wait: float, card_no: str, action: str
) -> None:
    from cardsvc.reader.link import command

    name = choose_reader(reader)
    with card_in(name, wait, f"card {mask(card_no)}") as link:
        say("Do not remove the card until you are told.")
        try:
            presented, chip = _presented(link)
            if presented != card_no:
                fail(
                    f"the card in the reader is {mask(presented)}", f"present card {mask(card_no)}"
                )
            challenge = command(link, bytes.fromhex("0084000004"), "get challenge")
            answer = counter.call(
                "POST",
                f"/api/v1/cards/{card_no}/purse-lock",
                {"action": action, "chip_serial": chip, "challenge": challenge.hex()},
            )
            command(link, bytes.fromhex(answer["command"]), f"application {action}")
            _data, sw = link.transmit(bytes.fromhex("00A4040009A00000000386980701"))
        except CardRemoved:
            fail("the card was removed", "put the card back and run the command again")
        except CardError as exc:
            fail(exc.detail, "run the command again; if it fails again, call a supervisor")
    if (sw == 0x6A81) != (action == "block"):
        fail(f"the purse answers SW {sw:04X} after the {action}", "call a supervisor")
    say(f"Done: the purse of card {mask(card_no)} is {action}ed. Remove the card.")


@agent.command("block")
@click.option("--card", "card_no", required=True, help="The card number (16 digits).")
@reader_option
@wait_option
@click.pass_obj
def block(counter: Counter, card_no: str, reader: str | None, wait: float) -> None:
    """Block the purse of a lost (found), frozen or ended card with secure messaging."""
    _purse_lock(counter, reader, wait, card_no, "block")


@agent.command("unblock")
@click.option("--card", "card_no", required=True, help="The card number (16 digits).")
@reader_option
@wait_option
@click.pass_obj
def unblock(counter: Counter, card_no: str, reader: str | None, wait: float) -> None:
    """Unblock the purse of an active card (recovered or unfrozen)."""
    _purse_lock(counter, reader, wait, card_no, "unblock")


@agent.command("pin")
@click.option("--pin-pad", "terminal_no", required=True,
              help="The counter PIN pad's terminal number (12 digits).")  # fmt: skip
@click.option("--pin-pad-command", envvar="CARDSVC_AGENT_PIN_PAD_COMMAND", required=True,
              help="The PIN pad's driver: run with the card number as its last argument, it prints the encrypted PIN block (CARDSVC_AGENT_PIN_PAD_COMMAND).")  # fmt: skip
@reader_option
@wait_option
@click.pass_obj
def pin(
    counter: Counter, terminal_no: str, pin_pad_command: str, reader: str | None, wait: float
) -> None:
    """Set or reset the online PIN of the presented card's holder from the counter's PIN pad:
    only the PIN block, encrypted by the PIN pad, passes through here."""
    import shlex
    import subprocess

    name = choose_reader(reader)
    with card_in(name, wait, "the holder's card") as link:
        try:
            card_no, _chip = _presented(link)
        except CardError as exc:
            fail(exc.detail, "take the card out, put it back and run the command again")
    account = counter.call("POST", "/api/v1/accounts/lookup", {"card_no": card_no})
    say("The holder types the new PIN twice on the PIN pad.")
    try:
        typed = subprocess.run(  # noqa: S603 - the PIN pad driver the counter PC is set up with
            [*shlex.split(pin_pad_command), card_no],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        fail(
            f"the PIN pad did not answer ({type(exc).__name__})", "check the PIN pad and try again"
        )
    block = typed.stdout.strip()
    result = counter.call(
        "POST",
        f"/api/v1/accounts/{account['reference']}/pin",
        {"card_no": card_no, "terminal_no": terminal_no, "pin_block": block},
    )
    if not result["pin_set"]:
        fail("the PIN was not set", "try again")
    say("Done: the new PIN is set. Remove the card.")


def main() -> None:
    agent(prog_name="cardsvc-agent")
