"""Settlement's ``reexamine`` step gives a load pending past its time its ``aged_load`` break, as
the worker's ``age-loads`` job would, once."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from cardsvc import clock
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind
from cardsvc.db import unit_of_work
from cardsvc.reader.link import InProcessLink
from cardsvc.resources import Resources
from settlement.nightly import service
from terminals.devices.card import make_dev_personalized_card
from terminals.devices.counter_load import CounterLoadTerminal
from terminals.loads.tasks import age_pending_loads
from tests.factories import Site, make_card
from tests.terminals.helpers import signed_in


@pytest.mark.settings(load_evidence_break_after_seconds=3600)
async def test_the_step_ages_pending_loads_once(
    resources: Resources, client: httpx.AsyncClient, counter: Site
) -> None:
    clock.set_time(datetime(2026, 11, 20, 1, 0, tzinfo=UTC))
    db_card = await make_card(resources, 61)
    card = make_dev_personalized_card(db_card.card_no, 0)
    terminal = CounterLoadTerminal(await signed_in(client, counter))
    with InProcessLink(card) as link:
        torn = await terminal.authorize(terminal.initialize(link, 2_000), source="cash")
    assert torn.approved  # ... and the card was pulled before CREDIT FOR LOAD
    day = date(2026, 11, 20)
    clock.advance(timedelta(minutes=59))
    async with unit_of_work(resources.sessions) as session:
        early = await service.reexamine(session, resources.settings, day)
    assert early.detail.endswith("aged loads: 0 aged now, 0 open")
    clock.advance(timedelta(minutes=2))
    async with unit_of_work(resources.sessions) as session:
        first = await service.reexamine(session, resources.settings, day)
    assert first.detail.endswith("aged loads: 1 aged now, 1 open")
    assert (first.rows, first.amount) == (1, 2_000)
    async with unit_of_work(resources.sessions) as session:
        again = await service.reexamine(session, resources.settings, day)
    assert again.detail.endswith("aged loads: 0 aged now, 1 open")
    assert await age_pending_loads(resources.sessions, resources.settings, clock.now()) == 0
    async with resources.sessions() as session:
        [aged] = await breaks.list_breaks(session, kind=BreakKind.aged_load)
    assert (aged.amount, aged.source_id, aged.status) == (2_000, torn.load_id, "open")
