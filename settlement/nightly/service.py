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

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.breaks.models import BreakKind
from cardsvc.clearing import service as clearing
from cardsvc.db import unit_of_work
from cardsvc.errors import Conflict, DependencyUnavailable, NotFound
from cardsvc.hsm import HsmClient, HsmUnavailable, KeyRef
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.logging import get_logger
from cardsvc.settings import Settings
from settlement.batches import service as batches
from settlement.batches.service import MERCHANTS
from settlement.billers import service as billers
from settlement.fees import service as fees
from settlement.nightly import files, manifest, repository
from settlement.nightly.models import STEPS, RunStatus, SettlementRun, SettlementStep, Step
from settlement.payouts import service as payouts
from terminals.loads import service as loads
from terminals.uploads import service as uploads

log = get_logger(__name__)

POSTING_TX_TYPE = "settlement"


class SettlementUnbalanced(Conflict):
    """The day's money does not balance: the run stops before the report and pays no one."""


class SettlementFailed(Conflict):
    """A step of the run refused; the day stays resumable (``cardsvc settlement run`` again)."""


class PayerAccountMissing(Conflict):
    """Payouts are due but the account they are paid from is not configured."""


class SettlementRunning(Conflict):
    """Another settlement run holds the database's guard: one run at a time, whatever the day."""


class SettlementFilesInvalid(Conflict):
    """``cardsvc settlement verify``: a file of the day is altered, missing or extra, or the
    manifest's MAC does not verify."""


def posting_key(day: date, merchant_no: str) -> str:
    return f"settlement:{day.isoformat()}:{merchant_no}:clear"


@dataclass(frozen=True, slots=True)
class ClassLine:
    """One transaction class of a merchant's settled day (a ``settlement_lines`` row), as the
    finance pages and the merchant statements show it: counts and fen, gross negative for
    refunds."""

    tx_class: str
    count: int
    gross: int
    fee: int

    @property
    def net(self) -> int:
        return self.gross - self.fee


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
    hsm: HsmClient

    def crash_point(self, point: str) -> None:
        """Development only: die here, as a kill would (docs/settlement.md, "Crash points")."""
        if self.settings.development and self.settings.settlement_crash_at == point:
            log.warning("settlement.crash_point", point=point)
            os.kill(os.getpid(), signal.SIGKILL)

    @property
    def directory(self) -> Path:
        return day_directory(self.settings, self.day)


def day_directory(settings: Settings, day: date) -> Path:
    return settings.settlement_root / day.isoformat()


# --- the steps ------------------------------------------------------------------------------


async def _close(ctx: Context, session: AsyncSession) -> StepOutcome:
    closed = await clearing.close_through(ctx.sessions, ctx.settings, ctx.day)
    names = ", ".join(d.isoformat() for d in closed) or "already closed"
    return StepOutcome(len(closed), 0, f"closed {names}")


async def _reexamine(ctx: Context, session: AsyncSession) -> StepOutcome:
    return await reexamine(session, ctx.settings, ctx.day)


TAC_PAGE = 500  # TAC-failed breaks read, verified and noted per round


async def reverify_tacs(
    sessions: async_sessionmaker[AsyncSession], hsm: HsmClient, day: date
) -> int:
    """Ask the HSM again about every open TAC-failed record of the days up to ``day``, a page at
    a time: the page is read in a session closed before the HSM is asked, and the breaks whose
    TAC now verifies are noted in a transaction of their own. Nothing is posted. How many
    verify."""
    after, verified = 0, 0
    while True:
        async with sessions() as reading:
            page = await repository.held_tacs(reading, day, after, TAC_PAGE)
        if not page:
            return verified
        after = page[-1].break_id
        try:
            verdict = await hsm.tac_verify([uploads.tac_wire(_tac_fields(h)) for h in page])
        except HsmUnavailable as exc:
            raise DependencyUnavailable("HSM unavailable: run the settlement again") from exc
        good = [h.break_id for h, ok in zip(page, verdict.results, strict=True) if ok]
        if good:
            async with unit_of_work(sessions) as writing:
                await repository.note_open(writing, good, repository.TAC_VERIFIES)
        verified += len(good)


def _tac_fields(held: repository.HeldTac) -> uploads.TacFields:
    return uploads.TacFields(
        asn=held.asn, tx_type=held.tx_type, amount=held.amount, terminal_no=held.terminal_no,
        terminal_serial=held.terminal_serial, tx_datetime=held.tx_datetime,
        key_version=held.key_version, tac=held.tac, offline_counter=held.offline_counter,
    )  # fmt: skip


async def _reverify(ctx: Context) -> None:
    await reverify_tacs(ctx.sessions, ctx.hsm, ctx.day)


async def reexamine(session: AsyncSession, settings: Settings, day: date) -> StepOutcome:
    """The held breaks of the days up to ``day`` against what was accepted since
    (docs/settlement.md, "Re-examination"): gray records and TAC failures against each card's
    later records, counter gaps against the counters that came, and the pending loads past
    their time given their ``aged_load`` break. Closes only what needs no posting; the rest
    stays open with its amount. Rows: the breaks examined; amount: the fen still open."""
    now = clock.now()
    aged = 0
    while found := await loads.age_pending_loads(session, settings, now):
        aged += found  # one batch of loads per call, until none is left
        await session.flush()  # the batch's marks, so the next call reads past them
    gray = await repository.reexamine_gray(session, day, now)
    filled = await repository.reexamine_gaps(session, day, now)
    tac_later = await repository.reexamine_tac_copies(session, day, now)
    gray_open = await repository.open_breaks(session, BreakKind.gray, day, repository.GRAY_PROVEN)
    gaps_open = await repository.open_breaks(session, BreakKind.counter_gap, day)
    tac_open = await repository.open_breaks(
        session, BreakKind.tac_failed, day, repository.TAC_VERIFIES
    )
    aged_open = await repository.open_breaks(session, BreakKind.aged_load, day)
    resolved = gray.recovered + gray.not_debited + filled + tac_later
    still = (gray_open, gaps_open, tac_open, aged_open)
    detail = (
        f"gray: {gray.recovered + gray.not_debited} resolved ({gray.recovered} recovered, "
        f"{gray.not_debited} not debited), {gray_open.count} open "
        f"({gray_open.noted} debit proven, to adjust in); "
        f"counter gaps: {filled} filled, {gaps_open.count} open; "
        f"TAC failed: {tac_later} accepted later, {tac_open.count} open "
        f"({tac_open.noted} verify now, to adjust in); "
        f"aged loads: {aged} aged now, {aged_open.count} open"
    )
    return StepOutcome(resolved + sum(o.count for o in still), sum(o.amount for o in still), detail)


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
    biller_count, biller_net = await billers.make_batches(session, ctx.day)
    return StepOutcome(
        count + biller_count,
        net + biller_net,
        f"{count} merchant batch(es), {biller_count} biller batch(es)",
    )


async def _postings(ctx: Context, session: AsyncSession) -> StepOutcome:
    """Post the due batches chunk by chunk, each chunk committed on its own (see the module
    docstring); ``session`` then records the step once none is left."""
    chunk = 0
    while True:
        async with unit_of_work(ctx.sessions) as work:
            due = await batches.due_batches(
                work, MERCHANTS, ctx.day, ctx.settings.settlement_posting_chunk
            )
            if not due:
                break
            posting_day = await clearing.clearing_date(work, ctx.settings)
            for batch in due:
                if not batch.postable:  # what it carries leaves nothing to pay: carried further
                    await batches.mark_carried(work, MERCHANTS, ctx.day, batch.payee)
                    continue
                posted = await ledger.post(work, _posting(ctx.day, posting_day, batch))
                await batches.mark_posted(
                    work, MERCHANTS, ctx.day, batch.payee, {"ledger_transaction_id": posted.id}
                )
            chunk += 1
            ctx.crash_point(f"postings:{chunk}:uncommitted")
        ctx.crash_point(f"postings:{chunk}")
    # The billers' batches: their fees out of their payables, chunk by chunk as well.
    settled = await billers.post_batches(ctx.sessions, ctx.settings, ctx.day, ctx.crash_point)
    totals = await batches.batch_totals(session, MERCHANTS, ctx.day)
    # The day's payouts, in the step's own transaction: recorded with it or not at all.
    made = await payouts.make_day_payouts(session, ctx.day)
    return StepOutcome(
        totals.posted,
        totals.posted_gross,
        f"{totals.posted} posting(s); billers {settled.settled} settled ({settled.fees} fen of "
        f"fees), {settled.carried} carried; payouts {made.due} due ({made.due_amount} fen), "
        f"{made.held} held ({made.held_amount} fen)",
    )


def _posting(day: date, posting_day: date, batch: batches.DueBatch) -> PostingRequest:
    # Pending clearing moves to what the merchant is owed (net) and the fee income; the posting
    # lands on the open day, like every posting, and its key names the day it settles.
    # With the carried batches of earlier days in (refunds, fees above the gross), the posting
    # clears the pending account back to what it was before them.
    pending = AccountRef(AccountKind.merchant_pending, batch.payee)
    entries = [Entry(pending, Side.debit, batch.total_gross)]
    if batch.total_net > 0:
        payable = AccountRef(AccountKind.merchant_payable, batch.payee)
        entries.append(Entry(payable, Side.credit, batch.total_net))
    if batch.total_fee > 0:
        entries.append(Entry(AccountRef(AccountKind.fee_income), Side.credit, batch.total_fee))
    return PostingRequest(
        idempotency_key=posting_key(day, batch.payee),
        tx_type=POSTING_TX_TYPE,
        clearing_date=posting_day,
        entries=entries,
        record_ref=f"settlement_batch:{day.isoformat()}:{batch.payee}",
        description=f"settlement of {day.isoformat()} for merchant {batch.payee}",
    )


async def _files(ctx: Context) -> StepOutcome:
    """Write the day's files aside while their rows stream from the database, put them in
    place, then (no transaction open) have the HSM MAC the manifest and write it last."""
    directory = ctx.directory
    writer = files.DayWriter(directory)
    try:
        async with ctx.sessions() as session:
            # The report's checks first: a day that does not balance gets no file (no bank file
            # above all) and fails here.
            if problems := await money_problems(session, ctx.day):
                raise SettlementUnbalanced(
                    "settlement does not balance, no file written: " + "; ".join(problems)
                )
            await _write_day(ctx, session, writer)
    except BaseException:
        writer.discard()
        raise
    ctx.crash_point("files:asides")
    written = writer.publish()
    ctx.crash_point("files:published")
    # The bank file is in place: its due payouts are issued (posted payable -> bank, each once).
    issued = await payouts.issue_payouts(ctx.sessions, ctx.settings, ctx.day, ctx.crash_point)
    entries = [manifest.Entry(f.name, f.size, f.sha256) for f in written]
    body = await sign_manifest(ctx.hsm, ctx.day, entries)
    files.write_atomically(directory / files.MANIFEST, body)
    size = sum(f.size for f in written) + len(body)
    count = len(written) + 1
    return StepOutcome(
        count,
        size,
        f"{count} file(s) in {directory}; {issued.issued} payout(s) issued ({issued.amount} fen)",
    )


async def sign_manifest(hsm: HsmClient, day: date, entries: list[manifest.Entry]) -> bytes:
    """The bytes of ``manifest.json``: the listing and the HSM's MAC over its canonical bytes
    under the file-MAC key. Call it with no database transaction open."""
    mac = await hsm.mac_generate(KeyRef.label(manifest.MAC_KEY), manifest.canonical(day, entries))
    return manifest.render(manifest.Manifest(day, tuple(entries), mac.hex().upper()))


async def _write_day(ctx: Context, session: AsyncSession, writer: files.DayWriter) -> None:
    day = ctx.day
    await writer.write(files.SUMMARY, files.summary_lines(repository.summary_rows(session, day)))
    await writer.write(
        files.DETAIL, files.detail_lines(repository.detail_rows(session, day), ctx.settings.zone)
    )
    operators = await repository.operators_of(session, day)
    streams = files.OperatorStreams(
        lines=lambda: repository.line_rows(session, day),
        results=lambda: repository.result_totals(session, day),
        refused=lambda: repository.refused_rows(session, day),
        uploads=lambda: repository.upload_rows(session, day),
    )
    await files.write_operator_files(writer, day, operators, streams)
    await writer.write(files.BILLERS, files.biller_lines(billers.batch_rows(session, day)))
    totals = await payouts.totals(session, day)
    if totals.due:
        payouts.payout_bank(ctx.settings)  # refuses before the file is out: PayoutBankMissing
        if not ctx.settings.settlement_payer_account:
            raise PayerAccountMissing(
                "CARDSVC_SETTLEMENT_PAYER_ACCOUNT is not set: the bank file has no payer"
            )
    await writer.write(
        files.bank_name(day),
        files.bank_lines(
            payouts.bank_file_payouts(session, day), ctx.settings.settlement_payer_account
        ),
    )


async def money_problems(session: AsyncSession, day: date) -> list[str]:
    """What does not balance in the day's money, from what the day touched only (no scan of
    history): the lines against the pending accounts' movement, the batches against the lines,
    each batch against itself, the postings against the ledger, the uploads against their
    records, the day's funding of online accounts against its postings. Empty when the day
    balances."""
    problems: list[str] = []
    _lines, cleared = await repository.line_totals(session, day)
    movement = await repository.pending_trade_movement(session, day)
    if cleared != movement:
        problems.append(
            f"cleared {cleared} fen but merchants' pending accounts moved {movement} fen"
        )
    totals = await batches.batch_totals(session, MERCHANTS, day)
    if totals.gross != cleared:
        problems.append(f"batches carry {totals.gross} fen of the {cleared} fen cleared")
    if unbalanced := await batches.unbalanced_batches(session, MERCHANTS, day):
        problems.append(f"{unbalanced} batch(es) where gross != net + fee")
    if totals.due:
        problems.append(f"{totals.due} batch(es) due and not posted")
    postings = await repository.posting_totals(session, day)
    if postings.keyed != postings.posted:
        problems.append(
            f"{postings.posted - postings.keyed} posted batch(es) without their settlement posting"
        )
    if postings.journal != postings.gross:
        problems.append(
            f"posted batches carry {postings.gross} fen but their postings {postings.journal} fen"
        )
    problems.extend(await funding_problems(session, day))
    problems.extend(await billers.problems(session, day))
    problems.extend(await payouts.problems(session, day))
    uploads = await repository.upload_totals(session, day)
    if uploads.unbalanced:
        problems.append(f"{uploads.unbalanced} upload(s) where records != accepted + refused")
    if uploads.declared_records != uploads.stored_records:
        problems.append(
            f"uploads declare {uploads.declared_records} record(s), "
            f"{uploads.stored_records} stored for the day"
        )
    return problems


async def funding_problems(session: AsyncSession, day: date) -> list[str]:
    """The day's deposits, withdrawals and bank credits against their keyed ledger transactions,
    and the day's funding transactions against the movements behind them."""
    problems: list[str] = []
    for kind in await repository.funding_totals(session, day):
        if kind.unkeyed:
            problems.append(f"{kind.unkeyed} {kind.source}(s) without their ledger posting")
        if kind.different:
            problems.append(
                f"{kind.different} {kind.source}(s) whose ledger posting is not theirs "
                "(amount, type, reference or accounts)"
            )
    for tx_type, count in (await repository.unexplained_funding(session, day)).items():
        problems.append(f"{count} {tx_type} posting(s) with no movement or credit behind them")
    return problems


async def _report(ctx: Context, session: AsyncSession) -> StepOutcome:
    """The day's money, checked from what this day touched (no scan of history)."""
    problems = await money_problems(session, ctx.day)
    if (left := await payouts.totals(session, ctx.day)).due:
        problems.append(f"{left.due} payout(s) due and not issued ({left.due_amount} fen)")
    if problems:
        raise SettlementUnbalanced("settlement does not balance: " + "; ".join(problems))
    lines, cleared = await repository.line_totals(session, ctx.day)
    totals = await batches.batch_totals(session, MERCHANTS, ctx.day)
    of_billers = await billers.totals(session, ctx.day)
    paid = await payouts.totals(session, ctx.day)
    return StepOutcome(
        lines,
        cleared,
        f"balanced: cleared {cleared}, fees {totals.fee}, net {totals.net}, "
        f"{totals.posted} posted, {totals.batches - totals.posted} carried; billers "
        f"{of_billers.gross} paid in, fees {of_billers.fee}, net {of_billers.net}, "
        f"{of_billers.posted} settled, {of_billers.batches - of_billers.posted} carried; payouts "
        f"{paid.due + paid.issued} to pay ({paid.due_amount + paid.issued_amount} fen), "
        f"{paid.held} held ({paid.held_amount} fen)",
    )


STEP_WORK: dict[Step, Callable[[Context, AsyncSession], Awaitable[StepOutcome]]] = {
    Step.close: _close,
    Step.reexamine: _reexamine,
    Step.clear: _clear,
    Step.fees: _fees,
    Step.batches: _batches,
    Step.postings: _postings,
    Step.report: _report,
}
# Steps that open their own sessions (and ask the HSM with none open): run before the step's
# recording transaction begins.
OUTSIDE_TRANSACTION: dict[Step, Callable[[Context], Awaitable[StepOutcome]]] = {
    Step.files: _files,
}
# Work a step does before its recording transaction begins (the HSM asked with no transaction
# open), the rest of the step then running in that transaction.
BEFORE_TRANSACTION: dict[Step, Callable[[Context], Awaitable[None]]] = {
    Step.reexamine: _reverify,
}
# Steps that run again on a day already past them: they only read what the others stored.
ALWAYS_RUN = frozenset({Step.files})


# --- the run --------------------------------------------------------------------------------


async def run(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    day: date,
    progress: Progress | None = None,
    *,
    hsm: HsmClient,
) -> RunResult:
    """Settle ``day``, or continue its settlement where an earlier run stopped. One run at a
    time: while another holds the database's guard this one is refused (``SettlementRunning``)
    before it touches anything."""
    async with repository.run_guard(sessions) as held:
        if not held:
            raise SettlementRunning("another settlement run is in progress; try again when it ends")
        return await _run(sessions, settings, day, progress, hsm)


async def _run(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    day: date,
    progress: Progress | None,
    hsm: HsmClient,
) -> RunResult:
    ctx = Context(sessions, settings, day, hsm)
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
    if (before := BEFORE_TRANSACTION.get(step)) is not None:
        await before(ctx)
    outside = OUTSIDE_TRANSACTION.get(step)
    if outside is not None:
        outcome = await outside(ctx)
    async with unit_of_work(ctx.sessions) as session:
        if outside is None:
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


# --- verification of the files --------------------------------------------------------------


class FileStatus(StrEnum):
    ok = "ok"
    altered = "altered"  # listed, but its size or SHA-256 differs
    missing = "missing"  # listed, not in the directory
    extra = "extra"  # in the directory, not listed


class ManifestStatus(StrEnum):
    ok = "ok"  # read, and its MAC verifies under the file-MAC key
    missing = "missing"
    invalid = "invalid"  # not a manifest of this system, or of another day
    mac_invalid = "mac_invalid"  # the HSM says the MAC is not over this listing


@dataclass(frozen=True, slots=True)
class FileCheck:
    name: str
    status: FileStatus
    expected_size: int | None
    size: int | None
    expected_sha256: str | None
    sha256: str | None


@dataclass(frozen=True, slots=True)
class Verification:
    """What ``verify_files`` found: the manifest's state and one check per file (listed files in
    name order, then the extra ones in name order)."""

    clearing_date: date
    directory: Path
    manifest: ManifestStatus
    detail: str
    files: tuple[FileCheck, ...]

    @property
    def ok(self) -> bool:
        return self.manifest is ManifestStatus.ok and all(
            f.status is FileStatus.ok for f in self.files
        )

    def problems(self) -> list[str]:
        found = [] if self.manifest is ManifestStatus.ok else [f"manifest: {self.detail}"]
        found += [
            f"{f.status.value}: {f.name}" for f in self.files if f.status is not FileStatus.ok
        ]
        return found


def _hash_file(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


async def verify_files(settings: Settings, hsm: HsmClient, day: date) -> Verification:
    """Recompute every file's size and SHA-256 against the day's manifest, have the HSM verify
    the manifest's MAC, and name every altered, missing or extra file. Reads no database."""
    directory = day_directory(settings, day)
    if not directory.is_dir():
        raise NotFound(f"no settlement files for {day.isoformat()} in {directory}")
    present = sorted(p.name for p in directory.iterdir() if p.name != files.MANIFEST)
    listed: dict[str, manifest.Entry] = {}
    path = directory / files.MANIFEST
    if not path.is_file():
        state, detail = ManifestStatus.missing, f"{files.MANIFEST} is missing"
    else:
        try:
            found = manifest.parse(await asyncio.to_thread(path.read_bytes))
            if found.clearing_date != day:
                raise manifest.ManifestInvalid(f"the manifest is of {found.clearing_date}")
        except manifest.ManifestInvalid as exc:
            state, detail = ManifestStatus.invalid, str(exc)
        else:
            listed = {f.name: f for f in found.files}
            valid = await hsm.mac_verify(
                KeyRef.label(manifest.MAC_KEY),
                manifest.canonical(day, found.files),
                bytes.fromhex(found.mac),
            )
            if valid:
                state, detail = ManifestStatus.ok, f"MAC verified under {manifest.MAC_KEY}"
            else:
                state, detail = ManifestStatus.mac_invalid, "the MAC does not verify"
    checks: list[FileCheck] = []
    for name, entry in sorted(listed.items()):
        target = directory / name
        if not target.is_file():
            checks.append(FileCheck(name, FileStatus.missing, entry.size, None, entry.sha256, None))
            continue
        size, sha = await asyncio.to_thread(_hash_file, target)
        status = FileStatus.ok if (size, sha) == (entry.size, entry.sha256) else FileStatus.altered
        checks.append(FileCheck(name, status, entry.size, size, entry.sha256, sha))
    for name in present:
        if name not in listed:
            target = directory / name
            found_size: int | None = None
            found_sha: str | None = None
            if target.is_file():
                found_size, found_sha = await asyncio.to_thread(_hash_file, target)
            checks.append(FileCheck(name, FileStatus.extra, None, found_size, None, found_sha))
    return Verification(day, directory, state, detail, tuple(checks))
