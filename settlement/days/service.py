"""What the days pages show (docs/finance-pages.md, "Days"): the clearing days with their
settlement status, counts and totals; the volume of the last days per transaction class; one
day's detail per merchant and class, and the progress of its run. Read only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.clearing.models import DayStatus
from cardsvc.errors import NotFound
from cardsvc.hsm import HsmClient
from cardsvc.settings import Settings
from settlement.billrecon.models import ReconStatus
from settlement.days import repository
from settlement.nightly import service as nightly
from settlement.nightly.models import STEPS, BatchStatus, RunStatus, Step
from settlement.payouts.models import PayoutStatus

DAYS_PAGE: Final = 30
MERCHANTS_PAGE: Final = 100
CHART_DAYS: Final = 30
# The amount a step records is fen, except the files step's (bytes written).
BYTE_STEPS: Final = frozenset({Step.files})


@dataclass(frozen=True, slots=True)
class DayRow:
    clearing_date: date
    day_status: DayStatus
    run_status: RunStatus | None  # None: never run
    attempts: int | None
    error: str | None
    merchants: int
    count: int
    gross: int
    fee: int
    net: int
    batches: int
    posted: int


@dataclass(frozen=True, slots=True)
class DaysPage:
    rows: list[DayRow]
    total: int


async def list_days(session: AsyncSession, *, page: int = 1) -> DaysPage:
    """A page of clearing days, newest first, each with its run and totals."""
    total = await repository.count_days(session)
    found = await repository.days(session, offset=(page - 1) * DAYS_PAGE, limit=DAYS_PAGE)
    if not found:
        return DaysPage([], total)
    first, last = found[-1][0], found[0][0]
    lines = await repository.line_totals(session, first, last)
    batches = await repository.batch_totals(session, first, last)
    rows = []
    for day, day_status, run_status, attempts, error in found:
        merchants, count, gross = lines.get(day, (0, 0, 0))
        n, posted, fee, net = batches.get(day, (0, 0, 0, 0))
        rows.append(
            DayRow(
                day, day_status, run_status, attempts, error, merchants, count, gross, fee, net,
                n, posted,
            )
        )  # fmt: skip
    return DaysPage(rows, total)


@dataclass(frozen=True, slots=True)
class VolumePoint:
    clearing_date: date
    tx_class: str
    count: int
    gross: int  # fen, negative for refunds


@dataclass(frozen=True, slots=True)
class Volume:
    first: date
    last: date
    classes: list[str]
    points: list[VolumePoint]


async def volume(session: AsyncSession, days: int = CHART_DAYS) -> Volume | None:
    """What was cleared per day and transaction class over the last ``days`` clearing dates up
    to the latest day (None when no day was ever opened)."""
    last = await repository.latest_day(session)
    if last is None:
        return None
    first = last - timedelta(days=days - 1)
    points = [VolumePoint(*row) for row in await repository.volume(session, first, last)]
    classes = sorted({p.tx_class for p in points})
    return Volume(first, last, classes, points)


@dataclass(frozen=True, slots=True)
class StepRow:
    step: Step
    number: int
    done: bool
    rows: int | None
    amount: int | None
    in_bytes: bool  # the amount counts bytes, not fen
    detail: str
    seconds: float | None


@dataclass(frozen=True, slots=True)
class ClassTotal:
    tx_class: str
    merchants: int
    count: int
    gross: int
    fee: int

    @property
    def net(self) -> int:
        return self.gross - self.fee


@dataclass(frozen=True, slots=True)
class MerchantDay:
    merchant_no: str
    name: str
    count: int
    gross: int
    fee: int
    net: int
    status: BatchStatus
    lines: list[nightly.ClassLine] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BillerDay:
    """A biller's batch of the day (docs/bills.md §8), the payout that paid it, and the day's
    reconciliation with the biller (§11)."""

    code: str
    name: str
    count: int
    payments: int
    gross: int
    fee: int
    net: int
    status: BatchStatus
    payout_reference: str | None
    payout_amount: int | None
    payout_status: PayoutStatus | None
    recon_status: ReconStatus | None
    disagreements: int | None


@dataclass(frozen=True, slots=True)
class DayDetail:
    clearing_date: date
    day_status: DayStatus
    run_status: RunStatus | None
    attempts: int | None
    error: str | None
    steps: list[StepRow]
    classes: list[ClassTotal]
    merchants: list[MerchantDay]
    merchant_total: int
    billers: list[BillerDay] = field(default_factory=list)

    @property
    def steps_done(self) -> int:
        return sum(1 for s in self.steps if s.done)

    @property
    def running(self) -> bool:
        return self.run_status is RunStatus.running


async def day_detail(session: AsyncSession, day: date, *, page: int = 1) -> DayDetail:
    """One clearing day: its run's steps (done or to do, in order), its totals per class, a
    page of its merchants (number order) with their lines per class, and its billers (code
    order: batch, payout, reconciliation)."""
    found = await repository.clearing_day(session, day)
    if found is None:
        raise NotFound(f"no clearing day {day.isoformat()}")
    run = await repository.run_of(session, day)
    done = {s.step: s for s in await repository.steps_of(session, day)}
    steps = []
    for number, step in enumerate(STEPS, start=1):
        row = done.get(step)
        steps.append(
            StepRow(
                step, number, row is not None,
                row.rows if row else None, row.amount if row else None, step in BYTE_STEPS,
                row.detail if row else "", row.seconds if row else None,
            )
        )  # fmt: skip
    classes = [ClassTotal(*row) for row in await repository.class_totals(session, day)]
    batches = await repository.merchant_batches(
        session, day, offset=(page - 1) * MERCHANTS_PAGE, limit=MERCHANTS_PAGE
    )
    merchants = [MerchantDay(*row) for row in batches]
    by_no = {m.merchant_no: m for m in merchants}
    for merchant_no, tx_class, count, gross, fee in await repository.lines_of(
        session, day, list(by_no)
    ):
        by_no[merchant_no].lines.append(nightly.ClassLine(tx_class, count, gross, fee))
    return DayDetail(
        day,
        found.status,
        run.status if run else None,
        run.attempts if run else None,
        run.error if run else None,
        steps,
        classes,
        merchants,
        await repository.count_merchants(session, day),
        [BillerDay(*row) for row in await repository.biller_batches(session, day)],
    )


# --- the day's files --------------------------------------------------------------------------

_FILE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MEDIA_TYPES: Final = {
    ".csv": "text/csv; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
}


async def day_files(settings: Settings, hsm: HsmClient, day: date) -> nightly.Verification:
    """Every file of the day with its size and SHA-256 against the manifest, whose MAC the HSM
    verifies (``settlement.nightly.service.verify_files``; no database, no transaction open)."""
    return await nightly.verify_files(settings, hsm, day)


@dataclass(frozen=True, slots=True)
class DayFile:
    path: Path
    name: str
    size: int
    media_type: str


def day_file(settings: Settings, day: date, name: str) -> DayFile:
    """A file of the day's directory to download: a plain name (no path, not hidden), a regular
    file there (a link is not followed), else ``NotFound``."""
    directory = nightly.day_directory(settings, day)
    path = directory / name
    if (
        not _FILE_NAME.match(name)
        or path.is_symlink()
        or not path.is_file()
        or path.resolve().parent != directory.resolve()
    ):
        raise NotFound(f"no settlement file {name!r} for {day.isoformat()}")
    return DayFile(
        path, name, path.stat().st_size, MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    )
