"""Purse loads (圈存) with the virtual card, over the in-process link and through pcscd.

Every scenario ends with the card, the ledger and the load records agreeing, and no path
crediting twice, including loads torn before MAC2 reached the card and after the card credited.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import httpx
import pytest

from cardsvc.db import read_sessions, unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.reader.errors import MacInvalid
from cardsvc.resources import Resources
from terminals.devices.card import make_dev_personalized_card
from terminals.devices.counter_load import CounterLoadTerminal, LoadAuthorization, TornLoad
from terminals.devices.host_client import HostError
from terminals.registry.models import MerchantCategory, TerminalKind
from tests.conftest_pcsc import Connect
from tests.factories import BANK, PIN, Site, make_card, make_site
from tests.terminals.helpers import assert_books_agree, balance, loads_of, signed_in


@pytest.fixture
async def terminal(client: httpx.AsyncClient, counter: Site) -> CounterLoadTerminal:
    return CounterLoadTerminal(await signed_in(client, counter))


async def test_cash_load_confirmed_by_tac(
    resources: Resources,
    terminal: CounterLoadTerminal,
    counter: Site,
    connect: Connect,
    tmp_path: Path,
) -> None:
    db_card = await make_card(resources, 31)
    card = make_dev_personalized_card(db_card.card_no, 0, state_path=tmp_path / "card.json")
    with connect(card) as link:
        result = await terminal.load(link, 5_000)
    assert (result.response_code, result.status) == ("00", "confirmed")
    assert card.state.balance == 5_000
    assert card.state.online_counter == 1
    assert await loads_of(resources, db_card.asn) == [("confirmed", "tac", 5_000)]
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=5_000)
    # The confirmation again (a retry) changes nothing; a wrong TAC is not accepted.
    assert result.tac is not None
    again = await terminal.confirm(1, result.tac)
    assert (again["status"], again["tac_valid"]) == ("confirmed", True)
    bogus = await terminal.confirm(1, bytes(4))
    assert bogus["tac_valid"] is False
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=5_000)


@pytest.mark.settings(purse_max_balance=11_000)
async def test_account_load_and_declines(
    resources: Resources, terminal: CounterLoadTerminal, counter: Site, connect: Connect
) -> None:
    db_card = await make_card(resources, 32, account=10_000)
    card = make_dev_personalized_card(db_card.card_no, 0)
    with connect(card) as link:
        ok = await terminal.load(link, 4_000, source="account", pin=PIN)
        poor = await terminal.load(
            link, 6_001, source="account", pin=PIN
        )  # 6,000 left in the account
        ceiling = await terminal.load(link, 7_001)  # 4,000 + 7,001 > 11,000
    assert (ok.status, poor.response_code, ceiling.response_code) == ("confirmed", "51", "61")
    assert card.state.balance == 4_000
    assert await balance(resources, AccountKind.resident_account, str(db_card.resident_id)) == 6_000
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=0)


async def test_only_counters_take_cash_and_kiosks_load_from_the_account(
    resources: Resources, client: httpx.AsyncClient, connect: Connect
) -> None:
    shop = await make_site(resources, 402, MerchantCategory.retail)  # a pos terminal
    kiosk = await make_site(resources, 403, MerchantCategory.retail, TerminalKind.kiosk)
    db_card = await make_card(resources, 34, account=10_000)
    card = make_dev_personalized_card(db_card.card_no, 0)
    at_shop = CounterLoadTerminal(await signed_in(client, shop))
    at_kiosk = CounterLoadTerminal(await signed_in(client, kiosk))
    with connect(card) as link:
        init = at_shop.initialize(link, 1_000)
        refused = [
            await at_shop.authorize(init, source="cash"),
            await at_shop.authorize(init, source="account", pin=PIN),
            await at_kiosk.authorize(init, source="cash"),  # cash at an unstaffed kiosk
        ]
        loaded = await at_kiosk.load(link, 2_000, source="account", pin=PIN)
    assert [(r.response_code, r.mac2) for r in refused] == [("58", None)] * 3
    assert (loaded.response_code, loaded.status) == ("00", "confirmed")
    assert card.state.balance == 2_000
    assert await balance(resources, AccountKind.resident_account, str(db_card.resident_id)) == 8_000
    for site in (shop, kiosk):
        assert await balance(resources, AccountKind.counter_cash, site.terminal_no) == 0
    # The refusal is an answer like any decline: a retry of its serial gets it again.
    again = await at_shop.authorize(init, source="cash", terminal_serial=refused[0].terminal_serial)
    assert (again.response_code, again.load_id) == ("58", refused[0].load_id)
    await assert_books_agree(resources, card, db_card.card_no, kiosk, cash=0)


async def test_a_replaced_cards_balance_is_loaded_by_transfer_once(
    resources: Resources, client: httpx.AsyncClient, connect: Connect
) -> None:
    """The balance moved from a replaced card (cards.tasks.release_balances) waits in the new
    card's transfer account; counters and kiosks load it, in parts if need be, never beyond."""
    kiosk = await make_site(resources, 404, MerchantCategory.retail, TerminalKind.kiosk)
    shop = await make_site(resources, 405, MerchantCategory.retail)
    db_card = await make_card(resources, 35, account=0)
    card = make_dev_personalized_card(db_card.card_no, 0)
    waiting = AccountRef(AccountKind.card_transfer, db_card.card_no)
    async with unit_of_work(resources.sessions) as s:
        await ledger.post(s, PostingRequest("release:35", "transfer", date.today(), [
            Entry(BANK, Side.debit, 3_000),  # as if cash once loaded onto the replaced card
            Entry(waiting, Side.credit, 3_000),
        ]))  # fmt: skip
    at_kiosk = CounterLoadTerminal(await signed_in(client, kiosk))
    at_shop = CounterLoadTerminal(await signed_in(client, shop))
    assert await at_kiosk.transfer_waiting(db_card.asn) == 3_000
    with pytest.raises(HostError) as refused:
        await at_shop.transfer_waiting(db_card.asn)
    assert refused.value.status == 403
    with connect(card) as link:
        part = await at_kiosk.load(link, 1_000, source="transfer")
        too_much = await at_kiosk.load(link, 2_001, source="transfer")
        at_a_shop = await at_shop.load(link, 2_000, source="transfer")
        rest = await at_kiosk.load_transfer(link)
        nothing = await at_kiosk.load_transfer(link)
    assert (part.status, too_much.response_code, at_a_shop.response_code) == (
        "confirmed",
        "51",
        "58",
    )
    assert rest is not None
    assert (rest.status, rest.balance_after, nothing) == ("confirmed", 3_000, None)
    assert card.state.balance == 3_000
    assert await balance(resources, AccountKind.card_float, db_card.card_no) == 3_000
    assert await at_kiosk.transfer_waiting(db_card.asn) == 0
    async with resources.sessions() as s:
        assert (await ledger.check_invariants(s)).ok


async def test_forged_initialize_is_refused(
    resources: Resources, terminal: CounterLoadTerminal, counter: Site, connect: Connect
) -> None:
    db_card = await make_card(resources, 33)
    card = make_dev_personalized_card(db_card.card_no, 1_000)
    with connect(card) as link:
        init = terminal.initialize(link, 2_000)
    forged = await terminal.authorize(dataclasses.replace(init, balance=0), source="cash")
    unknown = await terminal.authorize(
        dataclasses.replace(init, asn="3211000000000009"), source="cash"
    )
    assert (forged.response_code, forged.mac2, unknown.response_code) == ("96", None, "14")
    assert await balance(resources, AccountKind.card_float, db_card.card_no) == 0


async def test_torn_before_mac2_reaches_the_card(
    resources: Resources, terminal: CounterLoadTerminal, counter: Site, connect: Connect
) -> None:
    db_card = await make_card(resources, 34)
    card = make_dev_personalized_card(db_card.card_no, 0)
    with connect(card) as link:
        init = terminal.initialize(link, 5_000)
        auth = await terminal.authorize(init, source="cash")
        assert auth.approved  # ... and the card is pulled before CREDIT FOR LOAD
    assert card.state.balance == 0
    # Posted at authorization: the cash is in the drawer and the float holds it, pending.
    assert await balance(resources, AccountKind.card_float, db_card.card_no) == 5_000
    torn = TornLoad(init.asn, auth.terminal_serial, init.online_counter)
    with connect(card) as link:
        assert await terminal.recover(link, torn) is None  # the card has no proof of it (9406)
        retry = await terminal.load(link, 5_000)  # same online counter: the card never credited
    assert retry.status == "confirmed"
    assert card.state.balance == 5_000
    assert await loads_of(resources, db_card.asn) == [
        ("refunded", "superseded", 5_000),
        ("confirmed", "tac", 5_000),
    ]
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=5_000)
    # The old MAC2 is worthless now: a new INITIALIZE has a new random, so the card refuses it.
    with connect(card) as link:
        terminal.initialize(link, 5_000)
        with pytest.raises(MacInvalid):
            terminal.credit(link, auth)
    assert card.state.balance == 5_000


async def test_torn_after_the_card_credited_is_proven(
    resources: Resources, terminal: CounterLoadTerminal, counter: Site, connect: Connect
) -> None:
    db_card = await make_card(resources, 35)
    card = make_dev_personalized_card(db_card.card_no, 300)
    with connect(card) as link:
        card.tear_next_commit()
        torn = await terminal.load(link, 5_000)
    assert torn.status == "pending"
    assert torn.torn is not None
    assert card.state.balance == 5_300  # the card committed, the terminal never saw the TAC
    assert await loads_of(resources, db_card.asn) == [("pending", None, 5_000)]
    with connect(card) as link:
        proof = await terminal.recover(link, torn.torn)
    assert proof is not None
    assert (proof["status"], proof["resolution"]) == ("confirmed", "prove")
    assert card.state.balance == 5_300
    # The float counts what went through the host (the 300 was on the card before this ledger).
    assert await balance(resources, AccountKind.card_float, db_card.card_no) == 5_000
    assert await balance(resources, AccountKind.counter_cash, counter.terminal_no) == 5_000
    # The same proof again changes nothing.
    with connect(card) as link:
        again = await terminal.recover(link, torn.torn)
    assert again is not None
    assert again["status"] == "confirmed"
    assert await balance(resources, AccountKind.card_float, db_card.card_no) == 5_000


async def test_torn_after_credit_resolved_by_the_next_load(
    resources: Resources, terminal: CounterLoadTerminal, counter: Site, connect: Connect
) -> None:
    db_card = await make_card(resources, 36)
    card = make_dev_personalized_card(db_card.card_no, 0)
    with connect(card) as link:
        card.tear_next_commit()
        torn = await terminal.load(link, 5_000)
    assert torn.status == "pending"
    with connect(card) as link:
        nxt = await terminal.load(link, 1_000)  # its INITIALIZE shows online counter 1
    assert nxt.status == "confirmed"
    assert card.state.balance == 6_000
    assert await loads_of(resources, db_card.asn) == [
        ("confirmed", "later_record", 5_000),
        ("confirmed", "tac", 1_000),
    ]
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=6_000)


async def test_stale_initialize_and_replayed_authorization_do_not_credit_twice(
    resources: Resources, terminal: CounterLoadTerminal, counter: Site, connect: Connect
) -> None:
    db_card = await make_card(resources, 37)
    card = make_dev_personalized_card(db_card.card_no, 0)
    with connect(card) as link:
        stale = terminal.initialize(link, 2_000)  # answered, then never sent (a slow terminal)
        done = await terminal.load(link, 2_000)
    assert done.status == "confirmed"
    late = await terminal.authorize(stale, source="cash")  # arrives after the card moved on
    assert (late.response_code, late.mac2) == ("96", None)
    # The confirmed load's authorization replayed: same answer, and the card refuses it anyway.
    replay = await terminal.authorize(stale, source="cash", terminal_serial=late.terminal_serial)
    assert replay == late
    with connect(card) as link:
        again = LoadAuthorization(1, "00", True, 1, None, None)
        with pytest.raises(ValueError, match="not approved"):
            terminal.credit(link, again)
    assert card.state.balance == 2_000
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=2_000)


@pytest.mark.settings(purse_max_balance=7_000)
async def test_two_pending_loads_at_one_counter_are_told_apart_by_the_proof(
    resources: Resources,
    client: httpx.AsyncClient,
    terminal: CounterLoadTerminal,
    counter: Site,
    connect: Connect,
) -> None:
    db_card = await make_card(resources, 38)
    card = make_dev_personalized_card(db_card.card_no, 0)
    with connect(card) as link:
        first = await terminal.authorize(
            terminal.initialize(link, 3_000), source="cash"
        )  # never credited
    with connect(card) as link:
        card.tear_next_commit()
        torn = await terminal.load(link, 7_000)  # credited, answer lost
    assert first.approved
    assert torn.torn is not None
    # Both wait at online counter 0. A later INITIALIZE (counter 1, here of a load refused for
    # the purse ceiling: 7,000 + 1,000 > 7,000) cannot say which one the card took, so it
    # resolves neither.
    with connect(card) as link:
        refused = await terminal.load(link, 1_000)
    assert refused.response_code == "61"
    assert await loads_of(resources, db_card.asn) == [
        ("pending", None, 3_000),
        ("pending", None, 7_000),
    ]
    # The proof can: read at another counter terminal, relayed by it.
    other = CounterLoadTerminal(
        await signed_in(client, await make_site(resources, 102, MerchantCategory.retail))
    )
    with connect(card) as link:
        tac = other.prove(link, 1)
    assert tac is not None
    answer = await other.send_proof(db_card.asn, 1, tac)
    assert (answer["status"], answer["resolution"]) == ("confirmed", "prove")
    assert await loads_of(resources, db_card.asn) == [
        ("refunded", "superseded", 3_000),
        ("confirmed", "prove", 7_000),
    ]
    assert card.state.balance == 7_000
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=7_000)
    # A proof that matches nothing is answered, and changes nothing.
    nothing = await other.send_proof(db_card.asn, 1, bytes(4))
    assert (nothing["load_id"], nothing["tac_valid"]) == (None, False)


async def test_an_hsm_outage_is_a_503_that_keeps_the_serial_free(
    resources: Resources, terminal: CounterLoadTerminal, counter: Site
) -> None:
    from cardsvc.db import unit_of_work
    from cardsvc.errors import DependencyUnavailable
    from cardsvc.hsm.sim import TcpHsmClient
    from cardsvc.reader.link import InProcessLink
    from terminals.loads import repository as loads_repo
    from terminals.loads import service as loads
    from terminals.loads.schemas import ConfirmRequest, LoadRequest
    from terminals.online import repository as online_repo
    from tests.terminals.helpers import free_port

    db_card = await make_card(resources, 39)
    card = make_dev_personalized_card(db_card.card_no, 0)
    with InProcessLink(card) as link:
        init = terminal.initialize(link, 1_000)
    dead = TcpHsmClient("127.0.0.1", free_port(), timeout=0.5)
    request = LoadRequest(
        terminal_serial=77, terminal_no=counter.terminal_no, asn=init.asn, amount=1_000, source="cash",
        balance=init.balance, online_counter=init.online_counter, key_version=init.key_version,
        random=init.random.hex(), mac1=init.mac1.hex(),
    )  # fmt: skip
    try:
        # No verdict is no answer: 503, nothing kept, so the same load sent again is decided
        # then (docs/terminal-protocol.md §9.6: a timed-out load is resent on its serial).
        with pytest.raises(DependencyUnavailable):
            async with unit_of_work(resources.sessions) as s:
                await loads.authorize_load(
                    resources.sessions, s, await counter.signed(resources), request, hsm=dead,
                    settings=resources.settings,
                )  # fmt: skip
        async with resources.sessions() as s:
            assert await loads_repo.by_serial(s, counter.terminal_no, 77) is None
            assert await online_repo.by_serial(s, counter.terminal_no, 77) is None
        async with unit_of_work(resources.sessions) as s:
            outcome = await loads.authorize_load(
                resources.sessions, s, await counter.signed(resources, seq=2), request,
                hsm=resources.hsm, settings=resources.settings,
            )  # fmt: skip
            assert outcome.row.response_code == "00"
        async with unit_of_work(resources.sessions) as s:  # and its repeat needs no HSM
            again = await loads.authorize_load(
                resources.sessions, s, await counter.signed(resources, seq=3), request, hsm=dead,
                settings=resources.settings,
            )  # fmt: skip
            assert (again.replayed, again.row.id) == (True, outcome.row.id)
        undo = await terminal.host.post(
            "/api/v1/online/reversal", {"terminal_serial": 78, "original_serial": 77}
        )
        assert (undo.json()["response_code"], undo.json()["approved_amount"]) == ("00", 1_000)
        # Judging a TAC needs the HSM too: no verdict without it (a repeat of the TAC already
        # accepted needs none); the client may retry.
        ok = await terminal.load(InProcessLink(card).__enter__(), 500)
        assert ok.status == "confirmed"
        assert ok.tac is not None
        with pytest.raises(DependencyUnavailable):
            async with unit_of_work(resources.sessions) as s:
                await loads.confirm_load(
                    read_sessions(resources.engine),
                    s,
                    await counter.signed(resources),
                    ConfirmRequest(terminal_serial=1, tac="00000000"),
                    hsm=dead,
                    settings=resources.settings,
                )
    finally:
        await dead.close()
    await assert_books_agree(resources, card, db_card.card_no, counter, cash=500)
