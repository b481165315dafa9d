"""The ``reexamine`` step: held breaks against what the cards' later records prove."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakItem, BreakKind, BreakStatus
from cardsvc.breaks.schemas import BreakRef, NewBreak
from cardsvc.db import unit_of_work
from cardsvc.hsm import TacVerifyResult
from cardsvc.resources import Resources
from settlement.nightly import repository, service
from settlement.nightly.models import Step
from terminals.devices.validator import TapRefused
from tests.terminals.helpers import World, bus, issue_cards, tap


def _torn(device: Any, chip: Any) -> None:
    with pytest.raises(TapRefused, match="gray"):
        tap(device, chip, tear=True)


async def _snapshot(resources: Resources) -> list[tuple[Any, ...]]:
    async with resources.sessions() as session:
        rows = (await session.execute(select(BreakItem).order_by(BreakItem.id))).scalars()
        return [
            (b.id, b.kind, b.asn, b.counter, b.status, b.amount, b.resolution, b.note) for b in rows
        ]


async def test_held_breaks_close_on_evidence_and_a_rerun_changes_nothing(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    chips = await issue_cards(resources, [1, 2, 3, 4, 5, 6], balance=1000)
    recovered, filled, left, reused, proven, gap = chips
    a = await bus(client, world.bus_terminals[0])
    b = await bus(client, world.bus_terminals[1], "0002")
    _torn(a, chips[recovered])  # gray at counter 0; the card did debit
    for no in (filled, gap):
        tap(a, chips[no])
        tap(b, chips[no])  # counter 1 stays on b for now
        tap(a, chips[no])
    _torn(a, chips[left])  # gray, and the card is never seen again
    _torn(a, chips[proven])
    b.state.pending = [r for r in b.state.pending if r["asn"] != gap]  # never uploaded
    first = await a.upload()
    assert [r["code"] for r in first[0]["results"]].count("04") == 3

    # The next taps: the recovered card's gray record comes again with its TAC; the terminal
    # lost the other's gray record, but the card's next record shows the debit.
    a.state.gray.pop(proven)
    tap(a, chips[recovered])
    tap(a, chips[proven])
    await a.upload()
    await b.upload()  # fills the first card's gap (the upload closes it)
    # A gray record the card never counted: the next record reuses its counter.
    genuine = tap(a, chips[reused]).record
    a.state.pending = [dict(genuine, gray=True, tac=None, terminal_serial=900_001)]
    await a.upload()
    a.state.pending = [genuine]
    answers = await a.upload()
    assert [r["code"] for r in answers[0]["results"]] == ["00"]
    day = date.fromisoformat(answers[0]["clearing_date"])
    async with unit_of_work(resources.sessions) as session:
        # The gap a concurrent upload opened while the filling one was in flight: each
        # transaction saw the chain before the other.
        await breaks.open_breaks(
            session,
            [
                NewBreak(
                    kind=BreakKind.counter_gap,
                    clearing_date=day,
                    reason="counters 1..1 not seen",
                    ref=BreakRef(source="offline_record", asn=filled, counter=1),
                )
            ],
        )

    before = {(k, a_, c): s for _i, k, a_, c, s, *_ in await _snapshot(resources)}
    assert before[(BreakKind.gray, recovered, 0)] is BreakStatus.open
    assert before[(BreakKind.counter_gap, filled, 1)] is BreakStatus.open

    result = await service.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    step = next(s for s in result.steps if s.step is Step.reexamine)
    fare = genuine["amount"]
    assert step.detail == (
        "gray: 2 resolved (1 recovered, 1 not debited), 2 open (1 debit proven, to adjust in); "
        "counter gaps: 1 filled, 2 open; TAC failed: 0 accepted later, 0 open (0 verify now, "
        "to adjust in); "
        "aged loads: 0 aged now, 0 open"
    )
    assert step.rows == 7
    assert step.amount == 2 * fare  # the two gray records still open

    after = {
        (k, a_, c): (s, amt, res, note)
        for _i, k, a_, c, s, amt, res, note in await _snapshot(resources)
    }
    assert after[(BreakKind.gray, recovered, 0)][:3] == (BreakStatus.resolved, fare, "recovered")
    assert after[(BreakKind.gray, reused, 0)][:3] == (BreakStatus.resolved, fare, "not_debited")
    assert after[(BreakKind.counter_gap, filled, 1)][::2] == (BreakStatus.resolved, "filled")
    assert after[(BreakKind.gray, left, 0)] == (BreakStatus.open, fare, None, None)
    assert after[(BreakKind.gray, proven, 0)] == (
        BreakStatus.open, fare, None, repository.GRAY_PROVEN,
    )  # fmt: skip
    assert after[(BreakKind.counter_gap, gap, 1)][0] is BreakStatus.open
    assert after[(BreakKind.counter_gap, proven, 0)][0] is BreakStatus.open

    # Run again: nothing more closes, nothing changes.
    settled = await _snapshot(resources)
    async with unit_of_work(resources.sessions) as session:
        again = await service.reexamine(session, resources.settings, day)
    assert await _snapshot(resources) == settled
    assert again.rows == 4
    assert again.amount == 2 * fare
    assert again.detail.startswith("gray: 0 resolved (0 recovered, 0 not debited), 2 open")


async def test_tac_failures_are_verified_again_outside_any_transaction(
    client: httpx.AsyncClient,
    world: World,
    resources: Resources,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chips = await issue_cards(resources, [1, 2, 3], balance=1000)
    now_good, forged, sent_again = chips
    a = await bus(client, world.bus_terminals[0])
    records = {no: tap(a, chip).record for no, chip in chips.items()}
    real = resources.hsm.tac_verify

    async def refusing(wire: Any) -> TacVerifyResult:
        return TacVerifyResult(results=[False] * len(wire), errors={})

    # The HSM refused the first card's genuine TAC at upload (a key it did not hold yet).
    monkeypatch.setattr(resources.hsm, "tac_verify", refusing)
    a.state.pending = [records[now_good]]
    await a.upload()
    monkeypatch.setattr(resources.hsm, "tac_verify", real)
    a.state.pending = [dict(records[n], tac="00000000") for n in (forged, sent_again)]
    await a.upload()
    a.state.pending = [records[sent_again]]  # the same record again, with its real TAC
    answers = await a.upload()
    assert [r["code"] for r in answers[0]["results"]] == ["00"]
    day = date.fromisoformat(answers[0]["clearing_date"])

    asked: list[int] = []

    async def watching(wire: Any) -> TacVerifyResult:
        # The HSM is asked with the page's reading session closed: a write of the breaks goes
        # through meanwhile (on SQLite a reading transaction still open would refuse it).
        async with unit_of_work(resources.sessions) as session:
            await session.execute(select(BreakItem.id).limit(1).with_for_update())
        asked.append(len(wire))
        return await real(wire)

    monkeypatch.setattr(resources.hsm, "tac_verify", watching)
    result = await service.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    step = next(s for s in result.steps if s.step is Step.reexamine)
    assert asked == [3]
    assert "TAC failed: 1 accepted later, 2 open (1 verify now, to adjust in); " in step.detail
    fare = records[forged]["amount"]
    assert step.rows == 3
    assert step.amount == 2 * fare
    found = {a_: (s, res, note) for _i, k, a_, _c, s, _amt, res, note in await _snapshot(resources)}
    assert found[now_good] == (BreakStatus.open, None, repository.TAC_VERIFIES)
    assert found[forged] == (BreakStatus.open, None, None)
    assert found[sent_again][:2] == (BreakStatus.resolved, "accepted_later")

    settled = await _snapshot(resources)
    assert await service.reverify_tacs(resources.sessions, resources.hsm, day) == 1
    async with unit_of_work(resources.sessions) as session:
        again = await service.reexamine(session, resources.settings, day)
    assert await _snapshot(resources) == settled
    assert (again.rows, again.amount) == (2, 2 * fare)
