"""The nightly settlement of one clearing date (docs/settlement.md): recorded steps, in order,
close → re-examine → clear → fees → batches → postings → files → report.

Each step writes what it produced and marks itself done in one database transaction, so after a
crash or a kill anywhere a rerun starts at the first step not done, and a step killed halfway
left nothing (its transaction rolled back). The postings step is the one long step: it commits
one chunk of merchants at a time, each batch stamped with its ledger transaction in the same
transaction as the posting, and every posting carries the idempotency key
``settlement:<date>:<merchant_no>:clear``, so a rerun posts only what is left and nothing twice.
The files step runs on every run (it only reads what the steps stored), so a rerun of a settled
day rewrites the same bytes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.clearing import service as clearing
from cardsvc.db import unit_of_work
from cardsvc.errors import Conflict, NotFound
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.logging import get_logger
from cardsvc.settings import Settings
from settlement.fees import service as fees
from settlement.nightly import files, repository
from settlement.nightly.models import STEPS, RunStatus, SettlementRun, SettlementStep, Step

log = get_logger(__name__)

POSTING_TX_TYPE = "settlement"


class SettlementUnbalanced(Conflict):
    """The day's money does not balance: the run stops before the report and pays no one."""


class SettlementFailed(Conflict):
    """A step of the run refused; the day stays resumable (``cardsvc settlement run`` again)."""


def posting_key(day: date, merchant_no: str) -> str:
    return f"settlement:{day.isoformat()}:{merchant_no}:clear"


@dataclass(frozen=True, slots=True)
class StepOutcome:
    rows: int
    amount: int
    detail: str


@dataclass(frozen=True, slots=True)
class StepDone:
    step: Step
    rows: int
    amount: int
    detail: str
    seconds: float
    resumed: bool  # done by an earlier run, not this one


@dataclass
class RunResult:
    clearing_date: date
    status: RunStatus
    steps: list[StepDone] = field(default_factory=list)


Progress = Callable[[StepDone], None]


@dataclass(frozen=True, slots=True)
class Context:
    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    day: date

    def crash_point(self, point: str) -> None:
        """Development only: die here, as a kill would (docs/settlement.md, "Crash points")."""
        if self.settings.development and self.settings.settlement_crash_at == point:
            log.warning("settlement.crash_point", point=point)
            os.kill(os.getpid(), signal.SIGKILL)

    @property
    def directory(self) -> str:
        return str(self.settings.settlement_root / self.day.isoformat())


# --- the steps ------------------------------------------------------------------------------


async def _close(ctx: Context, session: AsyncSession) -> StepOutcome:
    closed = await clearing.close_through(ctx.sessions, ctx.settings, ctx.day)
    names = ", ".join(d.isoformat() for d in closed) or "already closed"
    return StepOutcome(len(closed), 0, f"closed {names}")


async def _reexamine(ctx: Context, session: AsyncSession) -> StepOutcome:
    return StepOutcome(0, 0, "nothing held for re-examination")


async def _clear(ctx: Context, session: AsyncSession) -> StepOutcome:
    lines, gross = await repository.clear(session, ctx.day)
    ctx.crash_point("clear:uncommitted")
    return StepOutcome(lines, gross, f"{lines} line(s) per merchant and class")


async def _fees(ctx: Context, session: AsyncSession) -> StepOutcome:
    found = await fees.apply_day(session, ctx.day)
    return StepOutcome(
        found.lines_with_fee, found.total, f"{found.lines_with_fee} line(s) with a fee"
    )


async def _batches(ctx: Context, session: AsyncSession) -> StepOutcome:
    count, net = await repository.make_batches(session, ctx.day)
    return StepOutcome(count, net, f"{count} merchant batch(es)")


async def _postings(ctx: Context, session: AsyncSession) -> StepOutcome:
    """Post the due batches chunk by chunk, each chunk committed on its own (see the module
    docstring); ``session`` then records the step once none is left."""
    chunk = 0
    while True:
        async with unit_of_work(ctx.sessions) as work:
            due = await repository.due_batches(work, ctx.day, ctx.settings.settlement_posting_chunk)
            if not due:
                break
            posting_day = await clearing.clearing_date(work, ctx.settings)
            for batch in due:
                posted = await ledger.post(work, _posting(ctx.day, posting_day, batch))
                await repository.mark_posted(work, ctx.day, batch.merchant_no, posted.id)
            chunk += 1
            ctx.crash_point(f"postings:{chunk}:uncommitted")
        ctx.crash_point(f"postings:{chunk}")
    totals = await repository.batch_totals(session, ctx.day)
    return StepOutcome(totals.posted, totals.posted_gross, f"{totals.posted} posting(s)")


def _posting(day: date, posting_day: date, batch: repository.DueBatch) -> PostingRequest:
    # Pending clearing moves to what the merchant is owed (net) and the fee income; the posting
    # lands on the open day, like every posting, and its key names the day it settles.
    pending = AccountRef(AccountKind.merchant_pending, batch.merchant_no)
    entries = [Entry(pending, Side.debit, batch.gross)]
    if batch.net > 0:
        payable = AccountRef(AccountKind.merchant_payable, batch.merchant_no)
        entries.append(Entry(payable, Side.credit, batch.net))
    if batch.fee > 0:
        entries.append(Entry(AccountRef(AccountKind.fee_income), Side.credit, batch.fee))
    return PostingRequest(
        idempotency_key=posting_key(day, batch.merchant_no),
        tx_type=POSTING_TX_TYPE,
        clearing_date=posting_day,
        entries=entries,
        record_ref=f"settlement_batch:{day.isoformat()}:{batch.merchant_no}",
        description=f"settlement of {day.isoformat()} for merchant {batch.merchant_no}",
    )


async def _files(ctx: Context, session: AsyncSession) -> StepOutcome:
    from pathlib import Path

    directory = Path(ctx.directory)
    written = [await files.write_summary(directory, repository.summary_rows(session, ctx.day))]
    size = sum(p.stat().st_size for p in written)
    return StepOutcome(len(written), size, f"{len(written)} file(s) in {directory}")


async def _report(ctx: Context, session: AsyncSession) -> StepOutcome:
    """The day's money, checked from what this day touched (no scan of history)."""
    problems: list[str] = []
    lines, cleared = await repository.line_totals(session, ctx.day)
    movement = await repository.pending_trade_movement(session, ctx.day)
    if cleared != movement:
        problems.append(
            f"cleared {cleared} fen but merchants' pending accounts moved {movement} fen"
        )
    totals = await repository.batch_totals(session, ctx.day)
    if totals.gross != cleared:
        problems.append(f"batches carry {totals.gross} fen of the {cleared} fen cleared")
    if unbalanced := await repository.unbalanced_batches(session, ctx.day):
        problems.append(f"{unbalanced} batch(es) where gross != net + fee")
    if totals.due:
        problems.append(f"{totals.due} batch(es) due and not posted")
    if problems:
        raise SettlementUnbalanced("settlement does not balance: " + "; ".join(problems))
    return StepOutcome(
        lines,
        cleared,
        f"balanced: cleared {cleared}, fees {totals.fee}, net {totals.net}, "
        f"{totals.posted} posted, {totals.batches - totals.posted} carried",
    )


STEP_WORK: dict[Step, Callable[[Context, AsyncSession], Awaitable[StepOutcome]]] = {
    Step.close: _close,
    Step.reexamine: _reexamine,
    Step.clear: _clear,
    Step.fees: _fees,
    Step.batches: _batches,
    Step.postings: _postings,
    Step.files: _files,
    Step.report: _report,
}
# Steps that run again on a day already past them: they only read what the others stored.
ALWAYS_RUN = frozenset({Step.files})


# --- the run --------------------------------------------------------------------------------


async def run(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    day: date,
    progress: Progress | None = None,
) -> RunResult:
    """Settle ``day``, or continue its settlement where an earlier run stopped."""
    ctx = Context(sessions, settings, day)
    await _start(ctx)
    result = RunResult(day, RunStatus.running)
    try:
        for step in STEPS:
            done = await _step_row(sessions, day, step)
            if done is not None and step not in ALWAYS_RUN:
                finished = StepDone(
                    step, done.rows, done.amount, done.detail, done.seconds, resumed=True
                )
            else:
                finished = await _run_step(ctx, step, already=done is not None)
            result.steps.append(finished)
            if progress is not None:
                progress(finished)
            ctx.crash_point(f"after:{step.value}")
    except BaseException as exc:
        await _fail(ctx, exc)
        raise
    async with unit_of_work(sessions) as session:
        await repository.set_run(session, day, status=RunStatus.settled, now=clock.now())
    result.status = RunStatus.settled
    log.info("settlement.settled", clearing_date=day.isoformat())
    return result


async def _start(ctx: Context) -> None:
    async with unit_of_work(ctx.sessions) as session:
        found = await repository.get_run(session, ctx.day, for_update=True)
        now = clock.now()
        if found is None:
            if await _never_opened(session, ctx):
                raise NotFound(f"clearing day {ctx.day} has not been opened yet")
            await repository.insert_run(session, ctx.day, now)
        else:
            await repository.set_run(
                session, ctx.day, status=RunStatus.running, now=now, attempt=True
            )


async def _never_opened(session: AsyncSession, ctx: Context) -> bool:
    open_day = await clearing.clearing_date(session, ctx.settings)
    return ctx.day > open_day


async def _step_row(
    sessions: async_sessionmaker[AsyncSession], day: date, step: Step
) -> SettlementStep | None:
    async with sessions() as session:
        for row in await repository.steps_of(session, day):
            if row.step is step:
                return row
    return None


async def _run_step(ctx: Context, step: Step, *, already: bool) -> StepDone:
    started = time.monotonic()
    async with unit_of_work(ctx.sessions) as session:
        outcome = await STEP_WORK[step](ctx, session)
        seconds = time.monotonic() - started
        if already:
            await repository.refresh_step(session, ctx.day, step, seconds=seconds, now=clock.now())
        else:
            await repository.record_step(
                session, ctx.day, step, rows=outcome.rows, amount=outcome.amount,
                detail=outcome.detail, seconds=seconds, now=clock.now(),
            )  # fmt: skip
    log.info(
        "settlement.step", clearing_date=ctx.day.isoformat(), step=step.value, rows=outcome.rows
    )
    return StepDone(step, outcome.rows, outcome.amount, outcome.detail, seconds, resumed=False)


async def _fail(ctx: Context, exc: BaseException) -> None:
    detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
    try:
        async with unit_of_work(ctx.sessions) as session:
            if await repository.get_run(session, ctx.day) is not None:
                await repository.set_run(
                    session, ctx.day, status=RunStatus.failed, now=clock.now(), error=detail[:500]
                )
    except Exception:  # the database itself may be what failed; the error above is the one
        log.warning("settlement.fail_not_recorded", clearing_date=ctx.day.isoformat())


# --- status ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayStatus:
    run: SettlementRun
    steps: list[SettlementStep]


async def status(session: AsyncSession, day: date | None, limit: int = 14) -> list[DayStatus]:
    if day is not None:
        found = await repository.get_run(session, day)
        if found is None:
            raise NotFound(f"no settlement run for {day}")
        runs = [found]
    else:
        runs = list(await repository.list_runs(session, limit))
    out = []
    for row in runs:
        steps = sorted(
            await repository.steps_of(session, row.clearing_date), key=lambda s: STEPS.index(s.step)
        )
        out.append(DayStatus(row, steps))
    return out
