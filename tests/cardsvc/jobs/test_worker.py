"""The worker runs the periodic jobs on its own: due, locked, isolated from each other, stoppable."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from click.testing import Result as Result_
from prometheus_client import REGISTRY
from sqlalchemy import text

from cardsvc import pgdirect
from cardsvc.cli import main
from cardsvc.jobs.table import all_jobs
from cardsvc.jobs.worker import Job, Result, Run, lock_name, run_forever, run_pass
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.ledger.schemas import AccountRef
from cardsvc.resources import Resources, Storage
from cardsvc.settings import get_settings
from terminals.online import repository as online_repo
from terminals.online.models import AuthStatus
from terminals.registry.models import MerchantCategory
from tests.factories import PIN, make_card, make_site
from tests.loopback import local
from tests.terminals.helpers import free_port, signed_in

JOBS = all_jobs()


def hourly(_settings: object) -> float:
    return 3600.0


class Recorder:
    """A job that records the moments it ran at; optionally fails or waits to be let go."""

    def __init__(self, fail: bool = False) -> None:
        self.moments: list[datetime] = []
        self.fail = fail
        self.started = asyncio.Event()
        self.go_on: asyncio.Event | None = None

    async def __call__(self, _storage: Storage, now: datetime) -> str:
        self.moments.append(now)
        self.started.set()
        if self.go_on is not None:
            await self.go_on.wait()
        if self.fail:
            raise RuntimeError("the disk is full")
        return f"ran {len(self.moments)} time(s)"


def runs_counted(job: str, result: Result) -> float:
    labels = {"job": job, "result": result.value}
    return REGISTRY.get_sample_value("cardsvc_worker_job_runs_total", labels) or 0.0


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_one_pass_releases_a_due_preauthorization_hold(
    resources: Resources, client: httpx.AsyncClient
) -> None:
    pump = await make_site(resources, 201, MerchantCategory.fuel)
    card = await make_card(resources, 1, account=10_000)
    account = AccountRef(AccountKind.resident_account, str(card.resident_id))
    host = await signed_in(client, pump)
    response = await host.post(
        "/api/v1/online/preauth",
        {
            "terminal_serial": 1,
            "asn": card.asn,
            "amount": 8_000,
            "pin_block": host.pin_block(PIN, card.card_no),
        },
    )
    assert response.json()["response_code"] == "00", response.text

    async def available() -> int:
        async with resources.sessions() as s:
            return await ledger.available(s, account)

    assert await available() == 2_000
    # Before the expiry the pass leaves the hold alone.
    runs = await run_pass(resources, JOBS)
    assert [(run.job, run.result) for run in runs] == [(job.name, Result.ok) for job in JOBS]
    summaries = {run.job: run.summary for run in runs}
    assert summaries["expire-holds"] == "released 0 expired pre-authorization hold(s)"
    assert await available() == 2_000

    later = datetime.now(UTC) + timedelta(seconds=resources.settings.online_hold_expiry_seconds + 1)
    runs = await run_pass(resources, JOBS, clock=lambda: later)
    assert [(run.job, run.result) for run in runs] == [(job.name, Result.ok) for job in JOBS]
    summaries = {run.job: run.summary for run in runs}
    assert summaries["expire-holds"] == "released 1 expired pre-authorization hold(s)"
    # A day later the day cut closed the day of the pre-authorization.
    assert summaries["day-cut"].startswith("closed ")
    assert not summaries["day-cut"].startswith("closed none")
    assert await available() == 10_000
    async with resources.sessions() as s:
        row = await online_repo.by_serial(s, pump.terminal_no, 1)
    assert row is not None
    assert row.status is AuthStatus.expired


async def test_a_failing_job_is_counted_and_the_others_go_on(resources: Resources) -> None:
    failing, fine = Recorder(fail=True), Recorder()
    jobs = [Job("test-failing", hourly, failing), Job("test-fine", hourly, fine)]
    failed_before = runs_counted("test-failing", Result.failed)
    ok_before = runs_counted("test-fine", Result.ok)

    runs = await run_pass(resources, jobs)

    assert [(run.job, run.result) for run in runs] == [
        ("test-failing", Result.failed),
        ("test-fine", Result.ok),
    ]
    assert runs[0].summary == "RuntimeError: the disk is full"
    assert runs_counted("test-failing", Result.failed) == failed_before + 1
    assert runs_counted("test-fine", Result.ok) == ok_before + 1
    last_success = "cardsvc_worker_job_last_success_timestamp_seconds"
    assert REGISTRY.get_sample_value(last_success, {"job": "test-fine"}) is not None
    assert REGISTRY.get_sample_value(last_success, {"job": "test-failing"}) is None
    # The failed run let its lock go: the next pass tries the job again.
    assert (await run_pass(resources, jobs))[0].result is Result.failed
    assert len(failing.moments) == 2


async def test_the_loop_retries_a_failing_job_at_its_interval(resources: Resources) -> None:
    failing, fine = Recorder(fail=True), Recorder()
    often = 0.02
    jobs = [Job("test-failing", lambda _: often, failing), Job("test-fine", lambda _: often, fine)]
    stop = asyncio.Event()
    loop = asyncio.create_task(run_forever(resources, jobs, stop))
    await eventually(lambda: len(failing.moments) >= 3 and len(fine.moments) >= 3)
    stop.set()
    await asyncio.wait_for(loop, timeout=2)


async def test_a_job_locked_elsewhere_is_skipped(resources: Resources) -> None:
    job_ran = Recorder()
    job = Job("test-locked", hourly, job_ran)
    skipped_before = runs_counted(job.name, Result.skipped_locked)

    # Another worker holds the job's lock: this one skips the round instead of waiting.
    async with resources.cache.lock(lock_name(job), timeout=30):
        started = time.monotonic()
        runs = await run_pass(resources, [job])
        assert time.monotonic() - started < 1
    assert runs[0].result is Result.skipped_locked
    assert job_ran.moments == []
    assert runs_counted(job.name, Result.skipped_locked) == skipped_before + 1

    assert (await run_pass(resources, [job]))[0].result is Result.ok
    assert len(job_ran.moments) == 1


async def test_the_loop_sleeps_until_due_and_stops_after_the_job_in_progress(
    resources: Resources,
) -> None:
    job_ran = Recorder()
    job_ran.go_on = asyncio.Event()
    stop = asyncio.Event()
    loop = asyncio.create_task(run_forever(resources, [Job("test-hourly", hourly, job_ran)], stop))
    await asyncio.wait_for(job_ran.started.wait(), timeout=5)

    # Asked to stop mid-run, the loop lets the job finish rather than cancelling it.
    stop.set()
    await asyncio.sleep(0.05)
    assert not loop.done()
    job_ran.go_on.set()
    await asyncio.wait_for(loop, timeout=2)

    # Between runs it sleeps until the next one is due (an hour away) and wakes when stopped.
    stop.clear()
    job_ran = Recorder()
    loop = asyncio.create_task(run_forever(resources, [Job("test-hourly", hourly, job_ran)], stop))
    await asyncio.wait_for(job_ran.started.wait(), timeout=5)
    await asyncio.sleep(0.1)
    assert len(job_ran.moments) == 1
    stop.set()
    await asyncio.wait_for(loop, timeout=1)


CHANNEL = "test_wake"


async def _notify(resources: Resources, *, commit: bool) -> None:
    async with resources.sessions() as session:
        await session.execute(text(f"NOTIFY {CHANNEL}"))
        await (session.commit() if commit else session.rollback())


async def _listeners(resources: Resources) -> list[int]:
    async with resources.sessions() as session:
        found = await session.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        )
        return [int(pid) for pid in found.scalars()]


async def test_a_commit_on_the_channel_wakes_the_job_and_a_rollback_does_not(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    if resources.settings.is_sqlite:
        pytest.skip("notifications are PostgreSQL's; on SQLite the interval runs the job")
    monkeypatch.setattr(pgdirect, "LISTEN_RETRY_SECONDS", 0.1)
    job_ran = Recorder()
    stop = asyncio.Event()
    job = Job("test-woken", hourly, job_ran, wake_on=CHANNEL)
    loop = asyncio.create_task(run_forever(resources, [job], stop))
    try:
        await eventually(lambda: len(job_ran.moments) == 1)
        await _notify(resources, commit=False)
        await asyncio.sleep(0.3)
        assert len(job_ran.moments) == 1  # listening since before the first run; no commit
        await _notify(resources, commit=True)
        await eventually(lambda: len(job_ran.moments) == 2)
        # A lost listener listens again, and runs the job once for what it may have missed.
        async with resources.sessions() as session:
            (pid,) = await _listeners(resources)
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await eventually(lambda: len(job_ran.moments) == 3)
        await _notify(resources, commit=True)
        await eventually(lambda: len(job_ran.moments) == 4)
    finally:
        stop.set()
        await asyncio.wait_for(loop, timeout=5)
    assert await _listeners(resources) == []  # the listening connection closed with the loop


async def test_a_job_woken_on_a_channel_still_runs_at_its_interval(resources: Resources) -> None:
    job_ran = Recorder()
    stop = asyncio.Event()
    job = Job("test-polled", lambda _: 0.05, job_ran, wake_on=CHANNEL)
    loop = asyncio.create_task(run_forever(resources, [job], stop))
    await eventually(lambda: len(job_ran.moments) >= 3)  # no notification was ever sent
    stop.set()
    await asyncio.wait_for(loop, timeout=5)


async def test_what_a_job_keeps_open_lasts_as_long_as_the_loop(resources: Resources) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def kept(_storage: Storage) -> AsyncIterator[Run]:
        events.append("open")

        async def run(_storage: Storage, _now: datetime) -> str:
            events.append("run")
            return "ran"

        yield run
        events.append("closed")

    stop = asyncio.Event()
    job = Job("test-kept", lambda _: 0.01, Recorder(fail=True), kept_open=kept)
    loop = asyncio.create_task(run_forever(resources, [job], stop))
    await eventually(lambda: events.count("run") >= 3)
    stop.set()
    await asyncio.wait_for(loop, timeout=5)
    assert events[0] == "open"
    assert events[-1] == "closed"
    assert events.count("open") == 1


# --- the command: in this process, except where the process itself (signals) is the point ------


def worker_env(tmp_path: Path) -> dict[str, str]:
    """Development mode on a fresh SQLite file, and no HSM: the worker's jobs touch no key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDSVC_")}
    env.update(
        CARDSVC_MODE="development",
        CARDSVC_VAR_DIR=str(tmp_path / "var"),
        CARDSVC_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cardsvc.db'}",
        CARDSVC_HSM_URL="tcp://127.0.0.1:1",  # nothing listens there
    )
    return env


def cardsvc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cardsvc", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )


def in_process(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Callable[..., Result_]:
    """``cardsvc ARGS`` in this process, in ``env`` alone (the subprocess's environment)."""
    for name in [k for k in os.environ if k.startswith("CARDSVC_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("CARDSVC_"):
            monkeypatch.setenv(name, value)

    def invoke(*args: str) -> Result_:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(main, list(args), catch_exceptions=False)
        finally:
            get_settings.cache_clear()

    return invoke


def test_worker_once_runs_each_job_and_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cardsvc = in_process(monkeypatch, worker_env(tmp_path))
    # Without the schema every job fails: the exit status tells cron.
    failed = cardsvc("worker", "--once", "--job", "expire-holds")
    assert failed.exit_code == 1, failed.output
    assert failed.stdout.startswith("expire-holds: failed: OperationalError")

    assert cardsvc("db", "upgrade").exit_code == 0
    result = cardsvc("worker", "--once")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "expire-holds: ok: released 0 expired pre-authorization hold(s)",
        "age-loads: ok: 0 pending load(s) without card evidence opened an aged_load break",
        "day-cut: ok: closed none; open day none yet; 0 partition(s) made",
        "release-balances: ok: moved 0 balances (0 fen); 0 empty; 0 wait for their new card",
        "expire-cards: ok: expired 0 cards",
        "bill-outbox: ok: nothing due",
        "age-bill-cash: ok: 0 counter bill payment(s) whose cash was not handed back opened a break",
        "settlement: ok: no day to settle",
        "bill-reconciliation: ok: nothing due",
    ]


def test_worker_serves_metrics_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    env = worker_env(tmp_path)
    assert cardsvc(env, "db", "upgrade").returncode == 0
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cardsvc", "worker", "--metrics-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first_pass_done = 'cardsvc_worker_job_runs_total{job="expire-cards",result="ok"} 1.0'
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                metrics = local().get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            except httpx.TransportError:
                metrics = ""
            if first_pass_done in metrics:
                break
            assert time.monotonic() < deadline, "the worker did not finish its first pass"
            time.sleep(0.1)
        assert 'cardsvc_worker_job_last_success_timestamp_seconds{job="expire-holds"}' in metrics

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        assert '"event": "worker.stopped"' in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_the_job_commands_run_the_workers_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cards release-balances``, ``cards expire-due`` and ``online expire-holds`` are one run of
    the worker's job each, by hand: the same summary, and no HSM needed."""
    cardsvc = in_process(monkeypatch, worker_env(tmp_path))
    assert cardsvc("db", "upgrade").exit_code == 0
    outputs = [
        cardsvc(*command)
        for command in (
            ("cards", "release-balances"),
            ("cards", "expire-due"),
            ("online", "expire-holds", "--now", "2030-01-01T00:00:00"),
            ("online", "pending-loads"),
        )
    ]
    # The summary is the last line (the task's own log line may come before it).
    assert [(r.exit_code, r.stdout.splitlines()[-1]) for r in outputs] == [
        (0, "moved 0 balances (0 fen); 0 empty; 0 wait for their new card"),
        (0, "expired 0 cards"),
        (0, "released 0 expired pre-authorization hold(s)"),
        (0, "no pending loads"),
    ]
