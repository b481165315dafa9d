"""The one clearing date and the day cut (日切): the rule, the cutoff, catch-up, closed days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.cards import tasks as card_tasks
from cardsvc.cards.models import BalanceRelease, Card, ReleaseKind, ReleaseStatus
from cardsvc.clearing import repository as days
from cardsvc.clearing import service as clearing
from cardsvc.clearing.models import DayStatus
from cardsvc.db import unit_of_work
from cardsvc.errors import NotFound
from cardsvc.ledger import repository as ledger_repository
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.resources import Resources
from cardsvc.settings import Settings
from terminals.uploads.models import OfflineRecord
from tests.clearing.helpers import open_day, status_of
from tests.factories import World, issue_cards
from tests.terminals.helpers import bus, tap

LOCAL = "Asia/Shanghai"


def at_local(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(y, m, d, hh, mm, tzinfo=ZoneInfo(LOCAL)).astimezone(UTC)


def test_business_date_follows_the_cutoff(settings: Settings) -> None:
    assert clearing.business_date(settings, at_local(2026, 3, 2, 1, 30)) == date(2026, 3, 2)
    early = settings.model_copy(update={"day_cutoff": "02:00"})
    # A ride at 01:30 still belongs to the day before: day D ends the next morning at 02:00.
    assert clearing.business_date(early, at_local(2026, 3, 2, 1, 30)) == date(2026, 3, 1)
    assert clearing.business_date(early, at_local(2026, 3, 2, 2, 0)) == date(2026, 3, 2)
    assert clearing.cut_moment(early, date(2026, 3, 1)) == at_local(2026, 3, 2, 2)
    late = settings.model_copy(update={"day_cutoff": "23:00"})
    # From noon the cutoff ends the day the same evening: 23:30 already belongs to D+1.
    assert clearing.business_date(late, at_local(2026, 3, 2, 23, 30)) == date(2026, 3, 3)
    assert clearing.business_date(late, at_local(2026, 3, 2, 22, 59)) == date(2026, 3, 2)
    assert clearing.cut_moment(late, date(2026, 3, 2)) == at_local(2026, 3, 2, 23)


def test_a_cutoff_must_be_a_time_of_day() -> None:
    for bad in ("24:00", "7:00", "12:60", "noon"):
        with pytest.raises(ValueError, match="day_cutoff"):
            Settings(mode="development", day_cutoff=bad)


async def test_the_first_day_and_one_answer_per_transaction(resources: Resources) -> None:
    settings = resources.settings
    now = at_local(2026, 3, 2, 9)
    async with unit_of_work(resources.sessions) as session:
        assert await clearing.clearing_date(session, settings, now=now) == date(2026, 3, 2)
        # Within one transaction the first answer holds, whatever a later read would say.
        await days.set_status(session, date(2026, 3, 2), DayStatus.closed, now)
        assert await clearing.clearing_date(session, settings, now=now) == date(2026, 3, 2)
    async with unit_of_work(resources.sessions) as session:
        # A new transaction sees the closed day: no day is open, so the next one opens.
        assert await clearing.clearing_date(session, settings, now=now) == date(2026, 3, 3)
        # What a statement of the same transaction read is not read again...
        assert await clearing.clearing_date(session, settings, seen=date(2026, 3, 9)) == date(
            2026, 3, 3
        )
    async with unit_of_work(resources.sessions) as session:
        # ...and is taken as the transaction's answer when it comes first.
        assert await clearing.clearing_date(session, settings, seen=date(2026, 3, 3)) == date(
            2026, 3, 3
        )


async def test_the_cut_closes_due_days_in_order(resources: Resources) -> None:
    settings = resources.settings
    async with unit_of_work(resources.sessions) as session:
        await clearing.clearing_date(session, settings, now=at_local(2026, 3, 2, 9))
    # Not due before the cutoff (midnight): nothing happens.
    result = await clearing.cut_due(resources.sessions, settings, at_local(2026, 3, 2, 23, 59))
    assert result.closed == []
    assert result.open_day == date(2026, 3, 2)
    # The system was down for three nights: the days are closed one after another, in order.
    result = await clearing.cut_due(resources.sessions, settings, at_local(2026, 3, 5, 0, 1))
    assert result.closed == [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]
    assert result.open_day == date(2026, 3, 5)
    async with resources.sessions() as session:
        rows = await days.list_days(session)
    assert [(r.clearing_date, r.status) for r in reversed(rows)] == [
        (date(2026, 3, 2), DayStatus.closed),
        (date(2026, 3, 3), DayStatus.closed),
        (date(2026, 3, 4), DayStatus.closed),
        (date(2026, 3, 5), DayStatus.open),
    ]
    assert all(r.cut_at is not None and r.closed_at is not None for r in rows[1:])
    # Running it again changes nothing.
    again = await clearing.cut_due(resources.sessions, settings, at_local(2026, 3, 5, 0, 2))
    assert again.closed == []


async def test_a_manual_cut_and_a_closing_day_resumed(resources: Resources) -> None:
    settings = resources.settings
    async with unit_of_work(resources.sessions) as session:
        await clearing.clearing_date(session, settings, now=at_local(2026, 3, 2, 9))
    with pytest.raises(NotFound, match="not been opened"):
        await clearing.close_through(resources.sessions, settings, date(2026, 3, 4))
    # A day left closing (the cut stopped during its wait) is finished first.
    async with unit_of_work(resources.sessions) as session:
        await days.set_status(session, date(2026, 3, 2), DayStatus.closing, datetime.now(UTC))
        await days.insert_open_if_absent(session, date(2026, 3, 3), datetime.now(UTC))
    assert await clearing.close_through(resources.sessions, settings, date(2026, 3, 3)) == [
        date(2026, 3, 2),
        date(2026, 3, 3),
    ]
    assert await status_of(resources, date(2026, 3, 3)) is DayStatus.closed
    assert await open_day(resources) == date(2026, 3, 4)
    assert await clearing.close_through(resources.sessions, settings, date(2026, 3, 3)) == []


async def test_balance_releases_post_on_the_open_day(resources: Resources) -> None:
    """One rule everywhere: a release takes the open business day, not the calendar date."""
    settings = resources.settings
    no = next(iter(await issue_cards(resources, [7], balance=700)))
    async with unit_of_work(resources.sessions) as session:
        card_id = (await session.execute(select(Card.id).where(Card.card_no == no))).scalar_one()
        session.add(
            BalanceRelease(
                card_id=card_id, kind=ReleaseKind.refund, due_at=datetime.now(UTC),
                refund_to="counter_cash", refund_ref="OUTLET01", status=ReleaseStatus.pending,
                created_by="test",
            )
        )  # fmt: skip
        first = await clearing.clearing_date(session, settings)
    # The business day runs ahead of the calendar (closed early, twice).
    await clearing.close_through(resources.sessions, settings, first)
    await clearing.close_through(resources.sessions, settings, first + timedelta(days=1))
    report = await card_tasks.release_balances(resources.sessions, settings)
    assert (report.moved, report.amount) == (1, 700)
    async with resources.sessions() as session:
        release = (
            await session.execute(select(BalanceRelease).where(BalanceRelease.card_id == card_id))
        ).scalar_one()
        assert release.ledger_transaction_id is not None
        key = await ledger_key_date(session, release.ledger_transaction_id)
    assert key == first + timedelta(days=2)


async def ledger_key_date(session: AsyncSession, transaction_id: int) -> date:
    row = await ledger_repository.transaction_by_id(session, transaction_id)
    assert row is not None
    return row.clearing_date


async def test_a_late_record_goes_to_the_open_day(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    chips = await issue_cards(resources, [1, 2], balance=1000)
    device = await bus(client, world.bus_terminals[0])
    for chip in chips.values():
        tap(device, chip)
    async with unit_of_work(resources.sessions) as session:
        first = await clearing.clearing_date(session, resources.settings)
    await clearing.close_through(resources.sessions, resources.settings, first)
    # The rides were made on the closed day; their upload arrives after the cut.
    answers = await device.upload()
    assert {a["clearing_date"] for a in answers} == {(first + timedelta(days=1)).isoformat()}
    async with resources.sessions() as session:
        records = (await session.execute(select(OfflineRecord))).scalars().all()
    assert {r.clearing_date for r in records} == {first + timedelta(days=1)}
    assert {r.result_code for r in records} == {"00"}


async def test_keys_stay_unique_across_days(resources: Resources) -> None:
    """Idempotency keys hold across the cut (on PostgreSQL each day is its own partition)."""
    settings = resources.settings
    float_ = AccountRef(AccountKind.card_float, "3211000000000015")
    cash = AccountRef(AccountKind.counter_cash, "C1")

    def load(day: date) -> PostingRequest:
        return PostingRequest(
            idempotency_key="load:cross-day",
            tx_type="load",
            clearing_date=day,
            entries=[Entry(cash, Side.debit, 500), Entry(float_, Side.credit, 500)],
        )

    async with unit_of_work(resources.sessions) as session:
        day = await clearing.clearing_date(session, settings)
        first = await ledger.post(session, load(day))
    await clearing.close_through(resources.sessions, settings, day)
    async with unit_of_work(resources.sessions) as session:
        retry = await ledger.post(session, load(day))
        assert retry.replayed
        assert retry.id == first.id
        nxt = await clearing.clearing_date(session, settings)
        assert nxt == day + timedelta(days=1)
        with pytest.raises(Exception, match="other content"):
            await ledger.post(session, load(nxt))
    async with resources.sessions() as session:
        assert await ledger.balance(session, float_) == 500
        report = await ledger.check_invariants(session)
    assert report.ok, report.render()


async def test_a_record_accepted_once_across_days(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    """(ASN, offline counter) and (terminal, serial) stay claimed after the day they were
    accepted on: the same record in a later batch on a later day is a duplicate (03)."""
    chips = await issue_cards(resources, [3, 4], balance=1000)
    device = await bus(client, world.bus_terminals[0])
    for chip in chips.values():
        tap(device, chip)
    again = [dict(r) for r in device.state.pending]
    first = await device.upload()
    assert [r["code"] for r in first[0]["results"]] == ["00", "00"]
    await clearing.close_through(
        resources.sessions, resources.settings, date.fromisoformat(first[0]["clearing_date"])
    )
    device.state.pending = again
    later = await device.upload()
    assert later[0]["clearing_date"] != first[0]["clearing_date"]
    assert [r["code"] for r in later[0]["results"]] == ["03", "03"]
    for no in chips:
        async with resources.sessions() as session:
            assert await ledger.balance(session, AccountRef(AccountKind.card_float, no)) < 1000
    async with resources.sessions() as session:
        report = await ledger.check_invariants(session)
    assert report.ok, report.render()
