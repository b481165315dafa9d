"""One answer per (terminal, serial) across online messages and loads; reversals of loads; two
pending loads of one card never confused; declines are answers; the allowance goes back to the
day that took it (docs/terminal-protocol.md §9)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cardsvc import clock
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.reader.errors import CardRemoved
from cardsvc.reader.link import InProcessLink
from cardsvc.resources import Resources
from terminals.devices.card import make_dev_personalized_card
from terminals.devices.counter_load import CounterLoadTerminal
from terminals.devices.host_client import HostClient
from terminals.loads.models import PurseLoad
from terminals.online import repository as online_repo
from tests.factories import BANK, PIN, Site, make_card
from tests.terminals.helpers import assert_books_agree, balance, loads_of, signed_in, with_pin


async def online(host: HostClient, message: str, **payload: Any) -> httpx.Response:
    return await host.post(f"/api/v1/online/{message}", with_pin(host, message, payload))


async def answer(host: HostClient, message: str, **payload: Any) -> dict[str, Any]:
    response = await online(host, message, **payload)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def usage(resources: Resources, card_no: str, day: Any) -> int:
    async with resources.sessions() as s:
        return await online_repo.usage(s, card_no, day)


async def open_breaks(resources: Resources, kind: BreakKind) -> list[Any]:
    async with resources.sessions() as s:
        return [b for b in await breaks.list_breaks(s, kind=kind) if b.status == "open"]


async def test_loads_and_online_messages_share_one_serial_space(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    db_card = await make_card(resources, 51, account=10_000)
    card = make_dev_personalized_card(db_card.card_no, 0)
    terminal = CounterLoadTerminal(await signed_in(client, counter))
    with InProcessLink(card) as link:
        loaded = await terminal.load(link, 1_000)  # serial 1
    assert loaded.status == "confirmed"
    # A purchase reusing the load's serial is the conflict the document names, not a payment.
    reused = await online(terminal.host, "purchase", terminal_serial=1, asn=db_card.asn, amount=5)
    assert (reused.status_code, reused.json()["error"]) == (409, "IdempotencyConflict")
    # And a load reusing a purchase's serial.
    paid = await answer(terminal.host, "purchase", terminal_serial=2, asn=db_card.asn, amount=300)
    assert paid["response_code"] == "00"
    with InProcessLink(card) as link:
        init = terminal.initialize(link, 500)
    response = await terminal.host.post(
        "/api/v1/loads",
        {"terminal_serial": 2, "terminal_no": counter.terminal_no, "asn": init.asn,
         "amount": 500, "source": "cash", "balance": init.balance,
         "online_counter": init.online_counter, "key_version": init.key_version,
         "algorithm": init.algorithm, "random": init.random.hex(), "mac1": init.mac1.hex()},
    )  # fmt: skip
    assert (response.status_code, response.json()["error"]) == (409, "IdempotencyConflict")
    assert await balance(resources, AccountKind.resident_account, str(db_card.resident_id)) == 9_700
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=1_000)


async def test_a_reversal_voids_a_pending_load_back_to_its_source(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    db_card = await make_card(resources, 52, account=5_000)
    card = make_dev_personalized_card(db_card.card_no, 0)
    terminal = CounterLoadTerminal(await signed_in(client, counter))
    with InProcessLink(card) as link:
        cash = await terminal.authorize(terminal.initialize(link, 2_000), source="cash")
    link = InProcessLink(card).__enter__()  # the card stays in the reader
    account = await terminal.authorize(terminal.initialize(link, 1_500), source="account", pin=PIN)
    assert cash.approved
    assert account.approved
    assert await balance(resources, AccountKind.card_float, db_card.card_no) == 3_500
    # Neither CREDIT has been sent: the counter reverses both (serials 1 and 2).
    undo_cash = await terminal.reverse(cash.terminal_serial)
    undo_account = await terminal.reverse(account.terminal_serial)
    assert [(u["response_code"], u["approved_amount"]) for u in (undo_cash, undo_account)] == [
        ("00", 2_000),
        ("00", 1_500),
    ]
    assert await loads_of(resources, db_card.asn) == [
        ("voided", "reversal", 2_000),
        ("voided", "reversal", 1_500),
    ]
    # Back where each came from, in one posting each: the drawer and the online account.
    assert await balance(resources, AccountKind.card_float, db_card.card_no) == 0
    assert await balance(resources, AccountKind.counter_cash, counter.terminal_no) == 0
    assert await balance(resources, AccountKind.resident_account, str(db_card.resident_id)) == 5_000
    # The reversal again: its first answer; a second reversal of the load: nothing left to undo.
    again = await answer(
        terminal.host, "reversal", terminal_serial=undo_cash["terminal_serial"], original_serial=1
    )
    assert again == {**undo_cash, "replayed": True}
    twice = await terminal.reverse(cash.terminal_serial)
    assert (twice["response_code"], twice["approved_amount"]) == ("00", 0)
    # A faulty counter sends CREDIT after reversing: the card takes it. Its confirmation and its
    # proof are refused, and a break opens.
    tac = terminal.credit(link, account)
    late = await terminal.confirm(account.terminal_serial, tac)
    assert (late["status"], late["tac_valid"]) == ("voided", True)
    proof = await terminal.send_proof(db_card.asn, 1, tac)
    assert (proof["status"], proof["tac_valid"]) == ("voided", True)
    [undone] = await open_breaks(resources, BreakKind.load_undone_on_card)
    assert (undone.amount, undone.source, undone.asn, undone.counter) == (
        1_500, "purse_load", db_card.asn, 0,
    )  # fmt: skip
    assert card.state.balance == 1_500  # the chip holds it; the books gave it back: the break
    async with resources.sessions() as s:
        assert (await ledger.check_invariants(s)).ok


async def test_a_confirmed_load_cannot_be_reversed(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    db_card = await make_card(resources, 53)
    card = make_dev_personalized_card(db_card.card_no, 0)
    terminal = CounterLoadTerminal(await signed_in(client, counter))
    with InProcessLink(card) as link:
        loaded = await terminal.load(link, 4_000)
    refused = await terminal.reverse(1)
    assert (refused["response_code"], refused["approved"], refused["approved_amount"]) == (
        "12", False, 0,
    )  # fmt: skip
    assert loaded.status == "confirmed"
    assert await loads_of(resources, db_card.asn) == [("confirmed", "tac", 4_000)]
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=4_000)


async def test_a_load_whose_serial_was_reversed_first_is_refused_12(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    db_card = await make_card(resources, 54)
    card = make_dev_personalized_card(db_card.card_no, 0)
    terminal = CounterLoadTerminal(await signed_in(client, counter), first_serial=10)
    # The load with serial 10 timed out before reaching the host; its reversal came first.
    first = await answer(terminal.host, "reversal", terminal_serial=11, original_serial=10)
    assert (first["response_code"], first["approved_amount"]) == ("00", 0)
    with InProcessLink(card) as link:
        init = terminal.initialize(link, 2_500)
    late = await terminal.authorize(init, source="cash", terminal_serial=10)
    assert (late.response_code, late.approved, late.mac2) == ("12", False, None)
    repeat = await terminal.authorize(init, source="cash", terminal_serial=10)
    assert repeat == late  # the same answer (replayed)
    other = await online(terminal.host, "purchase", terminal_serial=10, asn=db_card.asn, amount=1)
    assert other.status_code == 409
    assert await loads_of(resources, db_card.asn) == []
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=0)


async def test_two_equal_pending_loads_in_one_second_are_never_confused(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    """Same card, counter, amount and second; the card took the second load's MAC2. The proof
    confirms that one (from the account) and refunds the cash one, not the other way round."""
    clock.set_time(datetime(2026, 11, 23, 2, 30, 15, tzinfo=UTC))
    db_card = await make_card(resources, 55, account=9_000)
    card = make_dev_personalized_card(db_card.card_no, 0)
    terminal = CounterLoadTerminal(await signed_in(client, counter))
    with InProcessLink(card) as link:
        cash = await terminal.authorize(terminal.initialize(link, 3_000), source="cash")
    with InProcessLink(card) as link:
        account = await terminal.authorize(
            terminal.initialize(link, 3_000), source="account", pin=PIN
        )
        card.tear_next_commit()
        with pytest.raises(CardRemoved):  # the card committed; the answer was lost
            terminal.credit(link, account)
    assert card.state.balance == 3_000
    assert (cash.host_datetime, account.host_datetime) == ("20261123103015", "20261123103016")
    with InProcessLink(card) as link:
        tac = terminal.prove(link, 1)
    assert tac is not None
    proof = await terminal.send_proof(db_card.asn, 1, tac)
    assert (proof["load_id"], proof["status"], proof["resolution"]) == (
        account.load_id, "confirmed", "prove",
    )  # fmt: skip
    assert await loads_of(resources, db_card.asn) == [
        ("refunded", "superseded", 3_000),
        ("confirmed", "prove", 3_000),
    ]
    # The books name the right source: the cash went back to the drawer, the account paid.
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=0)
    assert await balance(resources, AccountKind.resident_account, str(db_card.resident_id)) == 6_000


async def test_undoing_a_refund_the_account_has_spent_is_a_decline_not_an_error(
    resources: Resources, client: httpx.AsyncClient, shop: Site
) -> None:
    db_card = await make_card(resources, 56, account=1_000)
    host = await signed_in(client, shop)
    assert (await answer(host, "purchase", terminal_serial=1, asn=db_card.asn, amount=1_000))[
        "approved"
    ]
    assert (await answer(host, "refund", terminal_serial=2, original_serial=1, amount=600))[
        "approved"
    ]
    assert (await answer(host, "purchase", terminal_serial=3, asn=db_card.asn, amount=500))[
        "approved"
    ]  # the account spent most of the refund
    undo = await online(host, "reversal", terminal_serial=4, original_serial=2)
    assert undo.status_code == 200
    assert (undo.json()["response_code"], undo.json()["approved"]) == ("51", False)
    assert await balance(resources, AccountKind.resident_account, str(db_card.resident_id)) == 100
    assert await balance(resources, AccountKind.merchant_pending, shop.merchant_no) == 900


async def test_the_allowance_goes_back_to_the_day_that_took_it(
    resources: Resources, client: httpx.AsyncClient, pump: Site, shop: Site
) -> None:
    """A pre-authorization at 23:50 local, completed and reversed after midnight; a purchase at
    23:55 reversed after midnight: each gives back to its own day, not to the new one."""
    evening = datetime(2026, 11, 23, 15, 50, tzinfo=UTC)  # 23:50 in Asia/Shanghai
    day, next_day = evening.date(), (evening + timedelta(days=1)).date()
    clock.set_time(evening)
    db_card = await make_card(resources, 57, account=100_000)
    at_pump = await signed_in(client, pump)
    at_shop = await signed_in(client, shop)
    assert (await answer(at_pump, "preauth", terminal_serial=1, asn=db_card.asn, amount=30_000))[
        "approved"
    ]
    clock.advance(timedelta(minutes=5))
    assert (await answer(at_shop, "purchase", terminal_serial=1, asn=db_card.asn, amount=2_000))[
        "approved"
    ]
    assert await usage(resources, db_card.card_no, day) == 32_000
    clock.advance(timedelta(minutes=20))  # 00:15 the next day
    done = await answer(at_pump, "completion", terminal_serial=2, original_serial=1, amount=21_000)
    assert done["approved"]
    assert await usage(resources, db_card.card_no, day) == 23_000  # 9,000 unused came back
    assert (await answer(at_pump, "reversal", terminal_serial=3, original_serial=2))["approved"]
    assert (await answer(at_shop, "reversal", terminal_serial=2, original_serial=1))["approved"]
    assert await usage(resources, db_card.card_no, day) == 0
    assert await usage(resources, db_card.card_no, next_day) == 0
    assert (
        await balance(resources, AccountKind.resident_account, str(db_card.resident_id)) == 100_000
    )


async def test_declined_load_reversal_and_load_serial_for_completion(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    """Naming a declined load undoes nothing (00, 0); a completion or refund naming a load finds
    no approved payment of that kind (25)."""
    db_card = await make_card(resources, 58, account=100)
    card = make_dev_personalized_card(db_card.card_no, 0)
    terminal = CounterLoadTerminal(await signed_in(client, counter))
    with InProcessLink(card) as link:
        poor = await terminal.authorize(terminal.initialize(link, 500), source="account", pin=PIN)
        ok = await terminal.load(link, 100, source="account", pin=PIN)
    assert (poor.response_code, ok.status) == ("51", "confirmed")
    undo = await terminal.reverse(poor.terminal_serial)
    assert (undo["response_code"], undo["approved_amount"]) == ("00", 0)
    completion = await answer(
        terminal.host, "completion", terminal_serial=50, original_serial=2, amount=100
    )
    refund = await answer(terminal.host, "refund", terminal_serial=51, original_serial=2, amount=1)
    assert (completion["response_code"], refund["response_code"]) == ("25", "25")
    async with resources.sessions() as s:
        rows = (await s.execute(select(PurseLoad).order_by(PurseLoad.id))).scalars().all()
    assert [(r.terminal_serial, r.status.value) for r in rows] == [
        (1, "declined"),
        (2, "confirmed"),
    ]


@pytest.mark.settings(load_evidence_break_after_seconds=3600)
async def test_a_pending_load_ages_into_a_break_and_is_not_refunded(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    from terminals.loads.tasks import age_pending_loads

    start = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
    clock.set_time(start)
    db_card = await make_card(resources, 59)
    card = make_dev_personalized_card(db_card.card_no, 0)
    terminal = CounterLoadTerminal(await signed_in(client, counter))
    with InProcessLink(card) as link:
        torn = await terminal.authorize(terminal.initialize(link, 2_000), source="cash")
    assert torn.approved  # ... and the card was pulled before CREDIT FOR LOAD
    clock.advance(timedelta(minutes=59))
    assert await age_pending_loads(resources.sessions, resources.settings, clock.now()) == 0
    clock.advance(timedelta(minutes=2))
    assert await age_pending_loads(resources.sessions, resources.settings, clock.now()) == 1
    assert await age_pending_loads(resources.sessions, resources.settings, clock.now()) == 0
    [aged] = await open_breaks(resources, BreakKind.aged_load)
    assert (aged.amount, aged.asn, aged.counter, aged.terminal_no, aged.source_id) == (
        2_000, db_card.asn, 0, counter.terminal_no, torn.load_id,
    )  # fmt: skip
    assert str(aged.clearing_date) == "2026-11-20"
    # Not refunded: the money stays in the float until card evidence says where it is.
    assert await loads_of(resources, db_card.asn) == [("pending", None, 2_000)]
    assert await balance(resources, AccountKind.card_float, db_card.card_no) == 2_000
    # The card comes back: the next load at the same counter is proven, the old one refunded,
    # and its break closes by itself.
    with InProcessLink(card) as link:
        again = await terminal.load(link, 2_000)
    assert again.status == "confirmed"
    assert await open_breaks(resources, BreakKind.aged_load) == []
    async with resources.sessions() as s:
        [closed] = await breaks.list_breaks(s, kind=BreakKind.aged_load)
    assert (closed.resolver, closed.resolution) == ("system:loads", "load_refunded")
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=2_000)


async def test_a_cash_load_whose_drawer_was_emptied_is_not_voided(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    """The reversal of a pending cash load after the drawer's cash went to the bank: 51 in a
    200, nothing moves, the load stays pending (its evidence or its ageing settles it)."""
    from cardsvc.db import unit_of_work
    from cardsvc.ledger.models import Side
    from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest

    db_card = await make_card(resources, 60)
    card = make_dev_personalized_card(db_card.card_no, 0)
    terminal = CounterLoadTerminal(await signed_in(client, counter))
    with InProcessLink(card) as link:
        pending = await terminal.authorize(terminal.initialize(link, 2_000), source="cash")
    assert pending.approved
    drawer = AccountRef(AccountKind.counter_cash, counter.terminal_no)
    async with unit_of_work(resources.sessions) as s:
        await ledger.post(
            s,
            PostingRequest(
                idempotency_key="drawer-to-bank", tx_type="transfer",
                clearing_date=clock.now().date(),
                entries=[Entry(BANK, Side.debit, 2_000), Entry(drawer, Side.credit, 2_000)],
            ),
        )  # fmt: skip
    undo = await terminal.reverse(pending.terminal_serial)
    assert (undo["response_code"], undo["approved"], undo["approved_amount"]) == ("51", False, 0)
    assert await loads_of(resources, db_card.asn) == [("pending", None, 2_000)]
    assert await balance(resources, AccountKind.card_float, db_card.card_no) == 2_000
    async with resources.sessions() as s:
        assert (await ledger.check_invariants(s)).ok
