"""The risky load and reversal flows as an outside vendor's client meets them (tests/vendor.py,
written from docs/terminal-protocol.md alone): every answer has the document's shape, code and
text, and the books say what the document says they say."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from cardsvc import clock
from cardsvc.ledger.models import AccountKind
from cardsvc.reader.errors import CardRemoved
from cardsvc.reader.link import InProcessLink
from cardsvc.resources import Resources
from terminals.devices.card import make_dev_personalized_card
from tests.factories import PIN, Site, make_card
from tests.terminals.helpers import assert_books_agree, balance, loads_of
from tests.vendor import VendorTerminal, check_error, check_load, local_datetime


async def vendor(client: httpx.AsyncClient, site: Site) -> VendorTerminal:
    terminal = VendorTerminal(client, site.terminal_no, "50" + site.terminal_no + "00")
    await terminal.sign_in()
    return terminal


async def test_reversing_a_pending_load_gives_the_money_back_once(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    """§9.9, a pending load: 00 with the amount; the same reversal again its first answer; a new
    reversal 00 with 0; a late confirmation of it refused as voided."""
    db_card = await make_card(resources, 61)
    card = make_dev_personalized_card(db_card.card_no, 0)
    pos = await vendor(client, counter)
    link = InProcessLink(card).__enter__()
    init = pos.initialize(link, 5_000)
    loaded = await pos.load(9, init)
    assert loaded["response_code"] == "00"
    assert loaded["replayed"] is False
    # The answer timed out: the same request again (§9.6) is the same answer, posted once.
    again = await pos.load(9, init)
    assert again == {**loaded, "replayed": True}
    assert await balance(resources, AccountKind.counter_cash, counter.terminal_no) == 5_000
    # The holder pulls the card before CREDIT FOR LOAD; the counter reverses serial 9.
    undo = await pos.reverse(10, 9)
    assert (undo["response_code"], undo["approved_amount"], undo["replayed"]) == (
        "00",
        5_000,
        False,
    )
    assert await loads_of(resources, db_card.asn) == [("voided", "reversal", 5_000)]
    assert await balance(resources, AccountKind.counter_cash, counter.terminal_no) == 0
    assert await pos.reverse(10, 9) == {**undo, "replayed": True}
    twice = await pos.reverse(11, 9)
    assert (twice["response_code"], twice["approved_amount"]) == ("00", 0)
    # The load on serial 9 after its reversal: still its first answer, nothing moves again.
    assert await pos.load(9, init) == {**loaded, "replayed": True}
    # A faulty counter sends CREDIT anyway: the card takes it, the host refuses the confirmation.
    tac, sw = pos.credit(link, loaded)
    assert sw == 0x9000
    late = await pos.confirm(9, tac)
    assert late == {"load_id": loaded["load_id"], "status": "voided", "resolution": "reversal",
                    "tac_valid": True}  # fmt: skip
    assert await balance(resources, AccountKind.counter_cash, counter.terminal_no) == 0
    link.__exit__(None, None, None)


async def test_reversing_a_confirmed_load_is_declined_12(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    """§9.9, a confirmed load: 12 "invalid transaction", no auth code, nothing moves."""
    db_card = await make_card(resources, 62)
    card = make_dev_personalized_card(db_card.card_no, 0)
    pos = await vendor(client, counter)
    with InProcessLink(card) as link:
        loaded = await pos.load(9, pos.initialize(link, 5_000))
        tac, sw = pos.credit(link, loaded)
    assert sw == 0x9000
    confirmed = await pos.confirm(9, tac)
    assert confirmed == {"load_id": loaded["load_id"], "status": "confirmed", "resolution": "tac",
                         "tac_valid": True}  # fmt: skip
    assert await pos.confirm(9, tac) == confirmed  # repeating a confirmation is harmless
    refused = await pos.reverse(10, 9)
    assert (refused["response_code"], refused["message"], refused["auth_code"]) == (
        "12", "invalid transaction", None,
    )  # fmt: skip
    assert await pos.reverse(10, 9) == {**refused, "replayed": True}
    assert await loads_of(resources, db_card.asn) == [("confirmed", "tac", 5_000)]
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=5_000)


async def test_a_reversal_that_arrives_first_reverses_the_serial(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    """§9.0: a reversal of a serial never seen is 00 with 0; the load on it then is 12 (MAC2 and
    host date-time null), again 12 on a repeat; any other message on it is a conflict; confirming
    it is 404 (no approved load)."""
    db_card = await make_card(resources, 63, account=10_000)
    card = make_dev_personalized_card(db_card.card_no, 0)
    pos = await vendor(client, counter)
    first = await pos.reverse(21, 20)
    assert (first["response_code"], first["approved_amount"]) == ("00", 0)
    with InProcessLink(card) as link:
        init = pos.initialize(link, 2_500)
    late = await pos.load(20, init)
    assert late["response_code"] == "12"
    assert await pos.load(20, init) == {**late, "replayed": True}
    purchase = await pos.send(
        "POST", "/api/v1/online/purchase", {"terminal_serial": 20, "asn": init.asn, "amount": 1}
    )
    check_error(purchase, 409, "IdempotencyConflict")
    check_error(
        await pos.send("POST", "/api/v1/loads/confirm", {"terminal_serial": 20, "tac": "00000000"}),
        404,
        "NotFound",
    )
    assert await loads_of(resources, db_card.asn) == []
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=0)


async def test_one_serial_space_for_loads_and_payments(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    """§9.0: a purchase on a load's serial and a load on a purchase's are 409, nothing decided;
    a completion or refund naming a load is 25; a reversal naming a purchase undoes it."""
    db_card = await make_card(resources, 64, account=10_000)
    card = make_dev_personalized_card(db_card.card_no, 0)
    pos = await vendor(client, counter)
    with InProcessLink(card) as link:
        init = pos.initialize(link, 1_000)
        loaded = await pos.load(1, init)
        tac, _ = pos.credit(link, loaded)
        await pos.confirm(1, tac)
        check_error(
            await pos.send("POST", "/api/v1/online/purchase",
                           {"terminal_serial": 1, "asn": init.asn, "amount": 5}),
            409, "IdempotencyConflict",
        )  # fmt: skip
        paid = await pos.online("purchase", pin=PIN, terminal_serial=2, asn=init.asn, amount=300)
        assert paid["response_code"] == "00"
        check_error(
            await pos.send("POST", "/api/v1/loads",
                           pos.load_body(2, pos.initialize(link, 500), "cash")),
            409, "IdempotencyConflict",
        )  # fmt: skip
    extras: list[tuple[str, dict[str, Any]]] = [
        ("completion", {"amount": 100}),
        ("refund", {"amount": 1}),
    ]
    for message, extra in extras:
        refused = await pos.online(
            message, terminal_serial=3 + len(message), original_serial=1, **extra
        )
        assert refused["response_code"] == "25"
    undo = await pos.reverse(30, 2)
    assert (undo["response_code"], undo["approved_amount"]) == ("00", 300)
    assert (
        await balance(resources, AccountKind.resident_account, str(db_card.resident_id)) == 10_000
    )
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=1_000)


async def test_two_equal_pending_loads_at_one_counter_in_one_second(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    """§9.6: two loads of one card at one online counter never share a host date-time, so the
    proof names exactly the load the card took; the other goes back to its source (§9.8)."""
    clock.set_time(datetime(2026, 11, 23, 2, 30, 15, tzinfo=UTC))
    db_card = await make_card(resources, 65, account=9_000)
    card = make_dev_personalized_card(db_card.card_no, 0)
    pos = await vendor(client, counter)
    with InProcessLink(card) as link:
        cash = await pos.load(1, pos.initialize(link, 3_000), "cash")
        account = await pos.load(2, pos.initialize(link, 3_000), "account", PIN)
        card.tear_next_commit()
        with pytest.raises(CardRemoved):  # the card committed; its answer was lost
            pos.credit(link, account)
    assert (cash["host_datetime"], account["host_datetime"]) == ("20261123103015", "20261123103016")
    assert local_datetime(account["host_datetime"]) > local_datetime(cash["host_datetime"])
    with InProcessLink(card) as link:
        answer, sw = pos.prove(link, 1)
    assert sw == 0x9000
    assert answer[:4] == bytes(4)
    proof = await pos.send_proof(db_card.asn, 1, answer[4:8])
    assert proof == {"load_id": account["load_id"], "status": "confirmed", "resolution": "prove",
                     "tac_valid": True}  # fmt: skip
    assert await loads_of(resources, db_card.asn) == [
        ("refunded", "superseded", 3_000),
        ("confirmed", "prove", 3_000),
    ]
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=0)
    assert await balance(resources, AccountKind.resident_account, str(db_card.resident_id)) == 6_000
    # A proof that matches nothing (§9.8).
    nothing = await pos.send_proof(db_card.asn, 1, bytes(4))
    assert nothing == {"load_id": None, "status": None, "resolution": None, "tac_valid": False}


async def test_a_declined_load_answers_without_mac2(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    """A load the account cannot pay: 51 in a 200, no MAC2; its reversal undoes nothing."""
    db_card = await make_card(resources, 66, account=100)
    card = make_dev_personalized_card(db_card.card_no, 0)
    pos = await vendor(client, counter)
    with InProcessLink(card) as link:
        poor = check_load(await pos.load(1, pos.initialize(link, 500), "account", PIN), 1)
    assert poor["response_code"] == "51"
    undo = await pos.reverse(2, 1)
    assert (undo["response_code"], undo["approved_amount"]) == ("00", 0)


async def test_a_reversal_naming_another_terminals_message_undoes_nothing_of_it(
    resources: Resources, client: httpx.AsyncClient, counter: Site, shop: Site
) -> None:
    """§9.0: a reversal names the sender's own serials only: another terminal's purchase on
    that serial stands (00 with 0), and the sender's own serial is reversed from then on."""
    db_card = await make_card(resources, 67, account=5_000)
    till = await vendor(client, shop)
    desk = await vendor(client, counter)
    paid = await till.online("purchase", pin=PIN, terminal_serial=7, asn=db_card.asn, amount=800)
    assert paid["response_code"] == "00"
    undo = await desk.reverse(8, 7)
    assert (undo["response_code"], undo["approved_amount"]) == ("00", 0)
    assert await balance(resources, AccountKind.merchant_pending, shop.merchant_no) == 800
    late = await desk.online("purchase", pin=PIN, terminal_serial=7, asn=db_card.asn, amount=800)
    assert late["response_code"] == "12"
    assert await balance(resources, AccountKind.resident_account, str(db_card.resident_id)) == 4_200


async def test_the_signed_headers_as_section_3_bounds_them(
    resources: Resources, client: httpx.AsyncClient, shop: Site
) -> None:
    """§3 and §6.1: each malformed header gets its named refusal; X-Seq is 1 … 10^18 − 1 with no
    leading zeros; a refused X-Seq uses no number, the highest one is accepted."""
    pos = await vendor(client, shop)
    target = "/api/v1/terminal/lists/blacklist?since=0"
    for seq in ("0", "01", "+1", "1000000000000000000", "", "1e3"):
        check_error(await pos.send("GET", target, seq=seq), 401, "ReplayRefused")
    for headers, status, error in (
        ({"X-Terminal-No": shop.terminal_no[1:]}, 403, "TerminalUnknown"),
        ({"X-Session-Id": pos.session_id.upper()}, 401, "SessionExpired"),
        ({"X-Mac": "0" * 15}, 401, "MacInvalid"),
        ({"X-Mac": "0" * 16}, 401, "MacInvalid"),
    ):
        check_error(await pos.send("GET", target, seq="1", headers=headers), status, error)
    assert (await pos.send("GET", target, seq="1")).status_code == 200
    assert (await pos.send("GET", target, seq="999999999999999999")).status_code == 200
    check_error(await pos.send("GET", target, seq="999999999999999999"), 401, "ReplayRefused")
