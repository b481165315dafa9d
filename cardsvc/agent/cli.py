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
    "Conflict": "present a blank card",
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


def main() -> None:
    agent(prog_name="cardsvc-agent")
