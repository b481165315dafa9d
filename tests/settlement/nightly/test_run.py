"""``cardsvc settlement run``: recorded steps, clearing in the database, postings once, files
written again byte for byte, and a run killed anywhere resumed to the same books."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import date, timedelta

import httpx
import pytest
from sqlalchemy import select

from cardsvc.resources import Resources
from cardsvc.settings import Settings
from settlement.nightly import service
from settlement.nightly.files import cell, yuan
from settlement.nightly.models import STEPS, RunStatus, SettlementBatch, SettlementLine
from tests.processes import run_cardsvc
from tests.settlement.helpers import accepted_by_merchant, books, day_files, ride_day
from tests.terminals.helpers import BUS_MERCHANT, TAXI_MERCHANT, World


def test_yuan_and_cells() -> None:
    assert [yuan(v) for v in (0, 5, 100, 123456, -7, -1234)] == [
        "0.00", "0.05", "1.00", "1234.56", "-0.07", "-12.34",
    ]  # fmt: skip
    assert cell("=1+2") == "'=1+2"
    assert cell("@SUM(A1)") == "'@SUM(A1)"
    assert cell("-2") == "'-2"
    assert cell('a,"b"') == '"a,""b"""'
    assert cell("City Bus Co.") == "City Bus Co."


async def test_a_day_settles_once(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    day = await ride_day(client, world, resources)
    accepted = await accepted_by_merchant(resources, day)
    seen: list[service.StepDone] = []
    result = await service.run(
        resources.sessions, resources.settings, day, seen.append, hsm=resources.hsm
    )
    assert result.status is RunStatus.settled
    assert [s.step for s in seen] == list(STEPS)

    async with resources.sessions() as session:
        lines = (await session.execute(select(SettlementLine))).scalars().all()
        batches = (await session.execute(select(SettlementBatch))).scalars().all()
    assert {(line.merchant_id, line.tx_class): (line.count, line.gross) for line in lines} == {
        (m, "offline"): counted for m, counted in accepted.items()
    }
    gross = {b.merchant_no: b.gross for b in batches}
    assert set(gross) == {BUS_MERCHANT, TAXI_MERCHANT}
    after = await books(resources)
    assert after.pending == {BUS_MERCHANT: 0, TAXI_MERCHANT: 0}
    assert after.payable == gross
    assert after.settlement_postings == 2

    first = day_files(resources.settings.settlement_root, day)
    summary = first["summary.csv"].decode("utf-8")
    assert summary.startswith("\ufeffmerchant_no,merchant_name,class,count,gross,fee,net\r\n")
    bus_gross = yuan(gross[BUS_MERCHANT])
    assert f"{BUS_MERCHANT},City Bus Co.,offline,6,{bus_gross},0.00,{bus_gross}\r\n" in summary

    # A rerun of the settled day posts nothing and writes the same bytes.
    again = await service.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    assert [s.resumed for s in again.steps] == [s is not s.files for s in STEPS]
    assert await books(resources) == after
    assert day_files(resources.settings.settlement_root, day) == first

    # The next day: the settlement postings landed on it, and are not cleared again.
    nxt = await service.run(
        resources.sessions, resources.settings, day + timedelta(days=1), hsm=resources.hsm
    )
    assert nxt.status is RunStatus.settled
    assert await books(resources) == after


async def test_a_day_not_opened_yet_is_refused(resources: Resources) -> None:
    from cardsvc.errors import NotFound

    with pytest.raises(NotFound, match="not been opened"):
        await service.run(
            resources.sessions, resources.settings, date(2999, 1, 1), hsm=resources.hsm
        )


# Inside a step's transaction, between two committed chunks, and after the last step's files.
CRASH_POINTS = ["clear:uncommitted", "postings:1:uncommitted", "postings:1", "after:files"]


def _cli(settings: Settings, day: date, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cardsvc("settlement", "run", "--date", day.isoformat(), env={**os.environ, **env})


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_a_killed_run_resumes_to_the_same_books(
    client: httpx.AsyncClient, world: World, resources: Resources, point: str
) -> None:
    day = await ride_day(client, world, resources)
    accepted = await accepted_by_merchant(resources, day)
    expected_gross = sum(total for _count, total in accepted.values())
    killed = _cli(
        resources.settings,
        day,
        CARDSVC_SETTLEMENT_CRASH_AT=point,
        CARDSVC_SETTLEMENT_POSTING_CHUNK="1",
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    async with resources.sessions() as session:
        (state,) = await service.status(session, day)
    assert state.run.status is RunStatus.running
    assert len(state.steps) < len(STEPS)

    resumed = _cli(resources.settings, day, CARDSVC_SETTLEMENT_POSTING_CHUNK="1")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{day.isoformat()} settled" in resumed.stdout
    after = await books(resources)
    assert after.settlement_postings == 2
    assert sum(after.payable.values()) == expected_gross
    assert after.pending == {BUS_MERCHANT: 0, TAXI_MERCHANT: 0}
    async with resources.sessions() as session:
        (state,) = await service.status(session, day)
    assert state.run.status is RunStatus.settled
    assert state.run.attempts == 2
    files = day_files(resources.settings.settlement_root, day)

    # Run again: the same bytes, the same books.
    await service.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    assert day_files(resources.settings.settlement_root, day) == files
    assert await books(resources) == after
