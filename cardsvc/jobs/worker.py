"""The worker (``cardsvc worker``): runs the periodic jobs on their own, each at its interval.

Each domain defines its jobs (a :class:`Job` in its ``tasks.py``) and its package lists them in
``components.py``; the job table is assembled in :mod:`cardsvc.jobs.table`.

Each run holds a cache lock named after its job, so two workers on two hosts never run the same
job at once. The jobs are idempotent; the lock only saves duplicated work, so a worker that finds
it held skips the round instead of waiting. A job that raises is logged and counted and tried
again at its next interval; the other jobs go on.

A job may keep clients open for as long as the long-running worker runs (``kept_open``), and may
name a database notification channel (``wake_on``): on PostgreSQL, a notification committed on
that channel runs the job at once, so work written by another process is picked up without
waiting for the interval; the interval stays the fallback (SQLite, a lost listener, work that
came due by time).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, suppress
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cardsvc import clock
from cardsvc.cache import LockTimeout
from cardsvc.db import create_engine
from cardsvc.logging import get_logger, mask_text
from cardsvc.metrics import WORKER_JOB_LAST_SUCCESS, WORKER_JOB_RUNS
from cardsvc.pgdirect import listening
from cardsvc.resources import Storage, open_storage
from cardsvc.settings import Settings

log = get_logger(__name__)

Clock = Callable[[], datetime]
Run = Callable[[Storage, datetime], Awaitable[str]]  # one run at a moment; what it did


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    interval: Callable[[Settings], float]  # seconds between runs
    run: Run
    # Entered once by the long-running worker (and closed when it stops): yields the run to use
    # instead of ``run``, with what it keeps open (a client) for every run.
    kept_open: Callable[[Storage], AbstractAsyncContextManager[Run]] | None = None
    # A notification channel that runs the job at once (PostgreSQL; module docstring).
    wake_on: str | None = None


class Result(StrEnum):
    ok = "ok"
    failed = "failed"
    skipped_locked = "skipped_locked"


@dataclass(frozen=True, slots=True)
class JobRun:
    job: str
    result: Result
    summary: str  # what the job did, or why it did nothing


async def run_by_hand(settings: Settings, job: Job, now: datetime | None = None) -> str:
    """One run of ``job`` for its own CLI command (``cards release-balances`` and the like): no
    lock and no catching, so an error reaches the operator who typed it."""
    async with open_storage(settings) as storage:
        return await job.run(storage, now or clock.now())


def lock_name(job: Job) -> str:
    return f"worker:{job.name}"


async def run_job(storage: Storage, job: Job, now: datetime, run_with: Run | None = None) -> JobRun:
    """Run ``job`` once at ``now`` (by ``run_with``, the run of its ``kept_open``, when given)
    unless another worker is running it. Never raises."""
    # The lease is one interval: a crashed holder delays the job by at most that, and a run that
    # outlasts it may overlap another host's next run, which the idempotent jobs tolerate.
    lease = job.interval(storage.settings)
    started = time.monotonic()
    locked = False
    failure: Exception | None = None
    try:
        async with storage.cache.lock(lock_name(job), timeout=lease, blocking_timeout=0):
            locked = True
            run = JobRun(job.name, Result.ok, await (run_with or job.run)(storage, now))
    except Exception as error:  # one job's failure must not stop the others
        if isinstance(error, LockTimeout) and not locked:
            run = JobRun(job.name, Result.skipped_locked, "running in another worker")
        else:
            failure = error
            # One line, masked: the summary is also printed, where no log filter masks it.
            detail = mask_text(str(error).partition("\n")[0])
            run = JobRun(job.name, Result.failed, f"{type(error).__name__}: {detail}")
    WORKER_JOB_RUNS.labels(job.name, run.result.value).inc()
    if run.result is Result.ok:
        WORKER_JOB_LAST_SUCCESS.labels(job.name).set_to_current_time()
    seconds = round(time.monotonic() - started, 3)
    fields = {"job": job.name, "result": run.result.value, "summary": run.summary}
    if failure is None:
        log.info("worker.job", seconds=seconds, **fields)
    else:
        log.error("worker.job", seconds=seconds, exc_info=failure, **fields)
    return run


async def run_pass(
    storage: Storage, jobs: Sequence[Job], *, clock: Clock = clock.now
) -> list[JobRun]:
    """Run every job once, in order (``cardsvc worker --once``)."""
    return [await run_job(storage, job, clock()) for job in jobs]


async def run_forever(
    storage: Storage, jobs: Sequence[Job], stop: asyncio.Event, *, clock: Clock = clock.now
) -> None:
    """Run each job when due, or when woken on its channel, until ``stop`` is set; the job in
    progress finishes first."""
    loop = asyncio.get_running_loop()
    due = [loop.time()] * len(jobs)  # every job runs once at start
    woken = [False] * len(jobs)
    wake = asyncio.Event()

    def notified(channel: str) -> None:
        for index, job in enumerate(jobs):
            if job.wake_on == channel:
                woken[index] = True
        wake.set()

    async def stopping() -> None:
        await stop.wait()
        wake.set()

    async with AsyncExitStack() as stack:
        runs = [
            job.run if job.kept_open is None
            else await stack.enter_async_context(job.kept_open(storage))
            for job in jobs
        ]  # fmt: skip
        channels = sorted({job.wake_on for job in jobs if job.wake_on is not None})
        if channels and not storage.settings.is_sqlite:
            # A connection of its own: a listening connection is never handed to a request.
            listener = create_engine(storage.settings.database_url, pool_size=1)
            stack.push_async_callback(listener.dispose)
            await stack.enter_async_context(listening(listener, channels, notified))
        watcher = asyncio.create_task(stopping())
        stack.callback(watcher.cancel)
        while not stop.is_set():
            for index, job in enumerate(jobs):
                if stop.is_set():
                    return
                if woken[index] or due[index] <= loop.time():
                    woken[index] = False
                    await run_job(storage, job, clock(), runs[index])
                    # Counted from the end of the run, so a slow run never queues the next one.
                    due[index] = loop.time() + job.interval(storage.settings)
            if any(woken):
                continue  # woken during a run: its work is waiting
            wake.clear()
            if stop.is_set():
                return
            # Sleep until the next job is due or a job is woken; without jobs, until stopped.
            with suppress(TimeoutError):
                await asyncio.wait_for(
                    wake.wait(), max(0.0, min(due) - loop.time()) if due else None
                )


async def serve(settings: Settings, jobs: Sequence[Job]) -> None:
    """The long-running worker: runs until SIGTERM or SIGINT, then returns."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with open_storage(settings) as storage:
        log.info("worker.started", jobs=[job.name for job in jobs])
        await run_forever(storage, jobs, stop)
    log.info("worker.stopped")


async def run_once(settings: Settings, jobs: Sequence[Job]) -> list[JobRun]:
    async with open_storage(settings) as storage:
        return await run_pass(storage, jobs)
