"""End to end through pcscd + vpcd: issue, read back, lose, replace, move the balance and load it
onto the new chip."""

from __future__ import annotations

from datetime import date, timedelta

import httpx
import pytest

from cardsvc import clock
from cardsvc.blacklist import service as blacklist
from cardsvc.cards.tasks import release_balances
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.personalization import files
from cardsvc.reader.pcsc import PcscLink
from cardsvc.reader.purse import read_card
from cardsvc.resources import Resources
from terminals.devices.card import VirtualCard, make_blank_card
from terminals.devices.counter_load import CounterLoadTerminal
from terminals.registry.models import MerchantCategory, TerminalKind
from tests.conftest_pcsc import inserted
from tests.factories import make_site, resident_id
from tests.issuance.flow import personalize_card, register_and_apply
from tests.terminals.helpers import balance, signed_in

pytestmark = pytest.mark.pcsc


async def _personalize_through_pcscd(
    resources: Resources, reader: str, card: VirtualCard, application: int
) -> None:
    with inserted(card, reader), PcscLink(reader, wait=5.0) as link:
        result = await personalize_card(resources, link, application)
    assert result.seconds < 10


async def test_issue_lose_replace_through_pcscd(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
    pcscd: str,
) -> None:
    rid, name = resident_id("321102", "19920418", "356"), "孙悟空"
    _, application, old_no = await register_and_apply(
        client, operator, supervisor, resident_id=rid, name=name
    )
    old_card = make_blank_card(bytes.fromhex("A1A2A3A4A5A6A7A8"))
    await _personalize_through_pcscd(resources, pcscd, old_card, application)
    assert (
        await client.post(f"/api/v1/applications/{application}/handover", headers=operator)
    ).json()["status"] == "active"
    with inserted(old_card, pcscd), PcscLink(pcscd, wait=5.0) as link:
        snapshot = read_card(link)
    assert snapshot.card_no == old_no
    assert files.decode_text(snapshot.ef0016[2:22], "gbk") == name
    assert snapshot.ef06 is not None
    assert snapshot.ef06[:18].decode() == rid
    assert files.decode_text(snapshot.ef06[18:48], "gbk") == name
    assert old_card.state.transport_key is None
    assert len(old_card.state.keys) == 7
    async with unit_of_work(resources.sessions) as session:
        await ledger.post(session, PostingRequest("pcsc-load:1", "load", date.today(), [
            Entry(AccountRef(AccountKind.counter_cash, "C01"), Side.debit, 1234),
            Entry(AccountRef(AccountKind.card_float, old_no), Side.credit, 1234),
        ]))  # fmt: skip
        version = await blacklist.current_version(session)
    r = await client.post(f"/api/v1/cards/{old_no}/loss", headers=operator)
    assert r.json()["blacklist_version"] == version + 1
    r = await client.post(f"/api/v1/cards/{old_no}/replace", headers=operator)
    replacement = r.json()["replacement_application_id"]
    await client.post(f"/api/v1/applications/{replacement}/approve", headers=supervisor)
    new_no = (
        await client.post(f"/api/v1/applications/{replacement}/production", headers=operator)
    ).json()["card_no"]
    new_card = make_blank_card(bytes.fromhex("B1B2B3B4B5B6B7B8"))
    await _personalize_through_pcscd(resources, pcscd, new_card, replacement)
    assert (
        await client.post(f"/api/v1/applications/{replacement}/handover", headers=operator)
    ).json()["status"] == "active"
    assert (await client.get(f"/api/v1/cards/{old_no}", headers=operator)).json()[
        "status"
    ] == "replaced"
    later = clock.now() + timedelta(days=resources.settings.loss_waiting_period_days, seconds=1)
    assert (
        await release_balances(resources.sessions, resources.settings, now=later)
    ).amount == 1234
    # The counter loads the old card's balance onto the new chip (a transfer load, 圈存).
    counter = CounterLoadTerminal(
        await signed_in(
            client, await make_site(resources, 601, MerchantCategory.retail, TerminalKind.counter)
        )
    )
    with inserted(new_card, pcscd), PcscLink(pcscd, wait=5.0) as link:
        loaded = await counter.load_transfer(link)
        assert await counter.load_transfer(link) is None  # nothing waits any more
    assert loaded is not None
    assert (loaded.response_code, loaded.status) == ("00", "confirmed")
    assert new_card.state.balance == 1234
    assert await balance(resources, AccountKind.card_float, new_no) == 1234
    assert await balance(resources, AccountKind.card_transfer, new_no) == 0
    async with resources.sessions() as session:
        assert (await ledger.check_invariants(session)).ok
