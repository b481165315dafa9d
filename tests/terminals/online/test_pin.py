"""The cardholder's PIN on every online payment from the account (docs/terminal-protocol.md §9.2,
§10): 55, 75 and 81, the count of wrong PINs, the lock and its reset, retries and replays, the
no-PIN limit, and the PIN never written anywhere."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import MetaData, select

from cardsvc.accounts import service as accounts
from cardsvc.cards.models import Card, CardStatus
from cardsvc.db import unit_of_work
from cardsvc.errors import Conflict
from cardsvc.hsm import HsmUnavailable, PinKeyRef, PinOffset
from cardsvc.ledger.models import AccountKind
from cardsvc.logging import configure_logging
from cardsvc.reader.link import InProcessLink
from cardsvc.resources import Resources
from hsm_sim import pboc
from terminals.devices.card import make_dev_personalized_card
from terminals.devices.counter_load import CounterLoadTerminal
from terminals.devices.host_client import HostClient, encode_body
from terminals.online import service
from terminals.online.models import MessageKind
from terminals.online.schemas import PurchaseRequest
from terminals.registry.models import MerchantCategory
from tests.factories import PIN, Site, make_card, make_site, pin_block_for, set_pin
from tests.terminals.helpers import balance, signed_in
from tests.vendor import VendorTerminal

WRONG = "112358"
PURCHASE = "/api/v1/online/purchase"


async def pay(
    host: HostClient,
    card: Card,
    serial: int,
    amount: int = 100,
    pin: str | None = PIN,
    message: str = "purchase",
) -> dict[str, Any]:
    payload: dict[str, Any] = {"terminal_serial": serial, "asn": card.asn, "amount": amount}
    if pin is not None:
        payload["pin_block"] = host.pin_block(pin, card.card_no)
    response = await host.post(f"/api/v1/online/{message}", payload)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def pin_state(resources: Resources, card: Card) -> tuple[bool, int]:
    """(locked, tries left) of the card holder's account, as a counter sees them."""
    async with resources.sessions() as s:
        account = await accounts.for_card(s, resources.settings, card.card_no)
        shown = await accounts.view(s, resources.settings, account)
    return shown.pin_locked, shown.pin_tries_left


async def left(resources: Resources, card: Card) -> int:
    return await balance(resources, AccountKind.resident_account, str(card.resident_id))


def test_the_vendor_format0_block_is_the_public_examples() -> None:
    """The vendor client builds the block from §10's words alone; its clear block is the one of
    the public examples (ID TECH's PIN block page: PAN 43219876543210987, PIN 1234 →
    0412AC89ABCDEF67; IBM's ANSI X9.8 example: PAN 4000001234562, PIN 92389 → 0592789FFFEDCBA9)
    and of §10's worked example, once encrypted under its PIN key."""
    vendor = VendorTerminal(cast(httpx.AsyncClient, None), "321100000100", "5032110000010000")
    vendor.pin_key = bytes(16)  # any key: undo it to see the clear block
    for pan, pin, clear in (
        ("43219876543210987", "1234", "0412AC89ABCDEF67"),
        ("4000001234562", "92389", "0592789FFFEDCBA9"),
    ):
        sent = bytes.fromhex(vendor.pin_block(pin, pan))
        assert pboc.tdes_decrypt(vendor.pin_key, sent).hex().upper() == clear
    vendor.pin_key = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
    assert vendor.pin_block("482915", "3211000000000013") == "8CEB6516FA1F49DC"


async def test_every_payment_needs_the_right_pin(
    resources: Resources, client: httpx.AsyncClient, shop: Site, pump: Site
) -> None:
    card = await make_card(resources, 81, account=10_000)
    host = await signed_in(client, shop)
    missing = await pay(host, card, 1, pin=None)
    assert (missing["response_code"], missing["message"]) == ("55", "incorrect PIN")
    assert await pin_state(resources, card) == (False, 3)  # a missing PIN is no try
    assert (await pay(host, card, 2))["response_code"] == "00"
    at_pump = await signed_in(client, pump)
    held = await pay(at_pump, card, 1, 5_000, message="preauth")
    assert (held["response_code"], held["approved_amount"]) == ("00", 5_000)
    assert (await pay(at_pump, card, 2, 5_000, WRONG, "preauth"))["response_code"] == "55"
    assert await balance(resources, AccountKind.merchant_pending, shop.merchant_no) == 100
    no_pin = await make_card(resources, 82, account=10_000, pin=None)
    not_set = await pay(host, no_pin, 3)
    assert not_set["response_code"] == "55"  # the account has no PIN yet: set it at a counter
    assert await left(resources, no_pin) == 10_000


async def test_wrong_pins_lock_payments_until_a_counter_resets_the_pin(
    resources: Resources, client: httpx.AsyncClient, shop: Site
) -> None:
    card = await make_card(resources, 83, account=10_000)
    host = await signed_in(client, shop)
    assert (await pay(host, card, 1, pin=WRONG))["response_code"] == "55"
    assert await pin_state(resources, card) == (False, 2)
    assert (await pay(host, card, 2))["response_code"] == "00"  # a right PIN: the count is 0
    assert await pin_state(resources, card) == (False, 3)
    codes = [(await pay(host, card, serial, pin=WRONG))["response_code"] for serial in (3, 4, 5)]
    assert codes == ["55", "55", "75"]  # the wrong PIN that uses the last try is answered 75
    assert await pin_state(resources, card) == (True, 0)
    locked = await pay(host, card, 6)
    assert (locked["response_code"], locked["message"]) == (
        "75",
        "allowable number of PIN tries exceeded",
    )
    assert await left(resources, card) == 9_900  # only serial 2 paid
    await set_pin(resources, card, "604731")  # reset at a counter: the lock is lifted
    assert await pin_state(resources, card) == (False, 3)
    assert (await pay(host, card, 7))["response_code"] == "55"  # the old PIN is gone
    assert (await pay(host, card, 8, pin="604731"))["response_code"] == "00"


async def test_an_unreadable_block_is_81_and_no_try(
    resources: Resources, client: httpx.AsyncClient, shop: Site
) -> None:
    card = await make_card(resources, 84, account=10_000)
    other = await make_card(resources, 85, account=10_000)
    host = await signed_in(client, shop)
    typed_for_other = {
        "terminal_serial": 1, "asn": card.asn, "amount": 100,
        "pin_block": host.pin_block(PIN, other.card_no),
    }  # fmt: skip
    answer = (await host.post(PURCHASE, typed_for_other)).json()
    assert (answer["response_code"], answer["message"]) == ("81", "PIN cryptographic error")
    stale = host.pin_block(PIN, card.card_no)
    await host.sign_in()  # a new session: a new PIN key
    old_key = {"terminal_serial": 2, "asn": card.asn, "amount": 100, "pin_block": stale}
    assert (await host.post(PURCHASE, old_key)).json()["response_code"] == "81"
    assert await pin_state(resources, card) == (False, 3)
    assert (await pay(host, card, 3))["response_code"] == "00"


async def test_a_retry_gets_the_first_answer_and_takes_no_second_try(
    resources: Resources, client: httpx.AsyncClient, shop: Site
) -> None:
    card = await make_card(resources, 86, account=10_000)
    host = await signed_in(client, shop)
    wrong = await pay(host, card, 1, pin=WRONG)
    assert wrong["response_code"] == "55"
    # The same serial again, even with the right PIN: the first answer (the block is not part
    # of the message), and no PIN is checked, so no try is taken.
    again = await pay(host, card, 1)
    assert again == {**wrong, "replayed": True}
    assert await pin_state(resources, card) == (False, 2)
    paid = await pay(host, card, 2)
    assert paid["response_code"] == "00"
    assert await pay(host, card, 2, pin=None) == {**paid, "replayed": True}
    assert await left(resources, card) == 9_900


async def test_a_replayed_request_takes_no_try(
    resources: Resources, client: httpx.AsyncClient, shop: Site
) -> None:
    """A captured request with a wrong PIN, sent again as it was: refused as a replay, and the
    holder's tries are untouched (a PIN is checked at most once per sequence number)."""
    card = await make_card(resources, 87, account=10_000)
    host = await signed_in(client, shop)
    body = encode_body(
        {"terminal_serial": 1, "asn": card.asn, "amount": 100,
         "pin_block": host.pin_block(WRONG, card.card_no)}
    )  # fmt: skip
    headers = {**host.signed_headers("POST", PURCHASE, body), "Content-Type": "application/json"}
    assert (await client.post(PURCHASE, content=body, headers=headers)).json()[
        "response_code"
    ] == "55"
    for _ in range(3):
        replay = await client.post(PURCHASE, content=body, headers=headers)
        assert replay.json()["error"] == "ReplayRefused"
    assert await pin_state(resources, card) == (False, 2)


async def test_the_card_is_judged_before_the_pin_and_the_money_after(
    resources: Resources, client: httpx.AsyncClient, shop: Site
) -> None:
    lost = await make_card(resources, 88, account=10_000, status=CardStatus.lost)
    poor = await make_card(resources, 89, account=50)
    host = await signed_in(client, shop)
    assert (await pay(host, lost, 1, pin=WRONG))["response_code"] == "41"
    assert (await pay(host, poor, 2, pin=WRONG))["response_code"] == "55"
    assert (await pay(host, poor, 3))["response_code"] == "51"  # a right PIN: the count is 0
    assert await pin_state(resources, poor) == (False, 3)
    assert (await pay(host, poor, 4, 300_000))["response_code"] == "61"
    assert await pin_state(resources, poor) == (False, 3)


async def test_the_no_pin_limit_of_a_category(resources: Resources) -> None:
    settings = resources.settings.model_copy(update={"online_no_pin_limits": {"parking": 3_000}})
    parking = await make_site(resources, 311, MerchantCategory.parking)
    shop = await make_site(resources, 411, MerchantCategory.retail)
    card = await make_card(resources, 90, account=10_000)

    async def code(site: Site, serial: int, amount: int, pin: str | None = None) -> str:
        signed = await site.signed(resources)
        block = None if pin is None else pin_block_for(signed, card.card_no, pin)
        request = PurchaseRequest(
            terminal_serial=serial, asn=card.asn, amount=amount, pin_block=block
        )
        async with unit_of_work(resources.sessions) as s:
            outcome = await service.authorize(
                resources.sessions, s, signed, request, kind=MessageKind.purchase,
                hsm=resources.hsm, settings=settings,
            )  # fmt: skip
        return outcome.row.response_code

    assert await code(parking, 1, 3_000) == "00"
    assert await code(parking, 2, 3_001) == "55"
    assert await code(shop, 1, 1) == "55"
    assert await code(parking, 3, 100, WRONG) == "55"  # a block that is sent is checked
    assert await code(parking, 4, 3_001, PIN) == "00"


async def _purchase(resources: Resources, site: Site, card: Card, serial: int, pin: str) -> str:
    """One purchase in its own terminal session (so that several really run at once); its code,
    or the error it was refused with."""
    signed = await site.signed(resources)
    request = PurchaseRequest(
        terminal_serial=serial, asn=card.asn, amount=10,
        pin_block=pin_block_for(signed, card.card_no, pin),
    )  # fmt: skip
    try:
        async with unit_of_work(resources.sessions) as s:
            outcome = await service.authorize(
                resources.sessions, s, signed, request, kind=MessageKind.purchase,
                hsm=resources.hsm, settings=resources.settings,
            )  # fmt: skip
    except Conflict:
        return "Conflict"
    return outcome.row.response_code


async def test_concurrent_guesses_never_take_more_tries_than_are_left(
    resources: Resources, shop: Site
) -> None:
    card = await make_card(resources, 93, account=10_000)
    guesses = await asyncio.gather(
        *[_purchase(resources, shop, card, n, f"{n}92{n}83") for n in range(1, 7)]
    )
    assert set(guesses) <= {"55", "75", "Conflict"}
    # Three tries: at most two wrong PINs are answered 55, the one that uses the last try 75
    # (as is every guess after it, with no try); the others found every try taken (busy).
    assert guesses.count("55") <= 2
    assert await pin_state(resources, card) in ((True, 0), (False, 3 - guesses.count("55")))
    right = await make_card(resources, 94, account=10_000)
    paid = await asyncio.gather(*[_purchase(resources, shop, right, n, PIN) for n in range(7, 13)])
    assert set(paid) <= {"00", "Conflict"}  # busy: sent again, never taken for a lock
    assert await pin_state(resources, right) == (False, 3)


class _DownForPins:
    """The HSM, except that it does not answer PIN checks."""

    def __init__(self, hsm: Any) -> None:
        self._hsm = hsm

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hsm, name)

    async def pin_verify(
        self, key: PinKeyRef, pin_block: bytes, *, pan: str, validation_data: str, stored: PinOffset
    ) -> bool:
        raise HsmUnavailable("no answer")


async def test_an_hsm_that_does_not_answer_decides_nothing_and_takes_no_try(
    resources: Resources, shop: Site
) -> None:
    card = await make_card(resources, 91, account=10_000)
    signed = await shop.signed(resources)
    request = PurchaseRequest(
        terminal_serial=1, asn=card.asn, amount=100, pin_block=pin_block_for(signed, card.card_no)
    )
    async with unit_of_work(resources.sessions) as s:
        with pytest.raises(Exception, match="HSM unavailable"):
            await service.authorize(
                resources.sessions, s, signed, request, kind=MessageKind.purchase,
                hsm=_DownForPins(resources.hsm), settings=resources.settings,
            )  # fmt: skip
    assert await pin_state(resources, card) == (False, 3)
    retry = dataclasses.replace(signed, seq=signed.seq + 1)  # the 503 used its number
    async with unit_of_work(resources.sessions) as s:
        outcome = await service.authorize(
            resources.sessions, s, retry, request, kind=MessageKind.purchase,
            hsm=resources.hsm, settings=resources.settings,
        )  # fmt: skip
    assert outcome.row.response_code == "00"  # the same serial, decided now


# --- the PIN is written nowhere -------------------------------------------------------------

PLANTED = "906142"  # a PIN that appears nowhere else in the test world


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    yield stream
    logging.getLogger("sqlalchemy.engine").setLevel(logging.NOTSET)
    logging.getLogger("httpx").setLevel(logging.NOTSET)
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_a_planted_pin_is_in_no_log_no_audit_entry_and_no_table(
    resources: Resources, client: httpx.AsyncClient, shop: Site, captured: io.StringIO
) -> None:
    card = await make_card(resources, 92, account=10_000, pin=PLANTED)
    host = await signed_in(client, shop)
    blocks = [host.pin_block(PLANTED, card.card_no), host.pin_block(WRONG, card.card_no)]
    answers = [
        (await host.post(PURCHASE, {"terminal_serial": n, "asn": card.asn, "amount": 10,
                                     "pin_block": block})).json()
        for n, block in enumerate(blocks, start=1)
    ]  # fmt: skip
    assert [a["response_code"] for a in answers] == ["00", "55"]
    await set_pin(resources, card, PLANTED[::-1])  # a reset, audited
    logged = captured.getvalue()
    assert "pin" in logged.lower() or "online" in logged  # the requests were logged...
    for secret in (PLANTED, PLANTED[::-1], *blocks):
        assert secret not in logged  # ...but no PIN and no PIN block
    dump = await _every_value(resources)
    assert "account.pin_reset" in dump  # the audit trail has the reset...
    for secret in (PLANTED, PLANTED[::-1], *blocks):
        assert secret not in dump  # ...and no table holds a PIN or a block


async def _every_value(resources: Resources) -> str:
    """Every value of every row of every table, as text."""
    metadata = MetaData()
    async with resources.engine.connect() as connection:
        await connection.run_sync(metadata.reflect)
        parts: list[str] = []
        for table in metadata.sorted_tables:
            for row in await connection.execute(select(table)):
                parts.extend(
                    value.hex().upper() if isinstance(value, bytes) else str(value) for value in row
                )
    return "\n".join(parts)


async def test_a_load_from_the_account_needs_the_pin_and_cash_does_not(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    db_card = await make_card(resources, 95, account=10_000)
    chip = make_dev_personalized_card(db_card.card_no, 0)
    desk = CounterLoadTerminal(await signed_in(client, counter))
    with InProcessLink(chip) as link:
        init = desk.initialize(link, 1_000)
        missing = await desk.authorize(init, source="account")
        wrong = await desk.authorize(init, source="account", pin=WRONG)
        assert (missing.response_code, missing.mac2, wrong.response_code) == ("55", None, "55")
        assert await pin_state(resources, db_card) == (False, 2)
        loaded = await desk.load(link, 1_000, source="account", pin=PIN)
        cash = await desk.load(link, 500)
    assert (loaded.status, cash.status) == ("confirmed", "confirmed")
    assert await pin_state(resources, db_card) == (False, 3)
    assert await left(resources, db_card) == 9_000
