"""Billers in the nightly settlement (docs/bills.md §3, docs/settlement.md).

A successful bill payment already credited ``biller_payable:<code>`` on its clearing date, so a
biller's day needs no clearing posting: the ``batches`` step records each biller's movement of
the day (payments less refunds) with the fees of its payments by the biller's fee rule, the
``postings`` step takes each due batch's fees out of the payable (payable -> fee income, key
``settlement:<D>:biller:<code>:clear``), and the day's payouts pay what is left on the biller's
cycle (docs/payouts.md). Services never commit: the run's units of work do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc.clearing import service as clearing
from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.settings import Settings
from settlement.batches import service as batches
from settlement.batches.service import BILLERS, BatchTotals
from settlement.billers import repository
from settlement.billers.repository import BatchRow

FEE_TX_TYPE = repository.FEE_TX_TYPE
NOT_TRADE = repository.NOT_TRADE

__all__ = ["FEE_TX_TYPE", "NOT_TRADE", "BatchRow", "BatchTotals"]


def fee_key(day: date, code: str) -> str:
    return f"settlement:{day.isoformat()}:biller:{code}:clear"


async def make_batches(session: AsyncSession, day: date) -> tuple[int, int]:
    """The day's biller batches (the ``batches`` step): (batches, total net)."""
    return await repository.make_batches(session, day)


@dataclass(frozen=True, slots=True)
class Posted:
    settled: int  # due batches settled (fee posted, or none to post)
    carried: int  # due batches whose carry left nothing to pay: carried further
    fees: int  # fen of fee income posted


async def post_batches(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    day: date,
    crash_point: Callable[[str], None],
) -> Posted:
    """Settle the day's due biller batches, ``CARDSVC_SETTLEMENT_POSTING_CHUNK`` per committed
    transaction; each posting carries its key, so a rerun posts only what is left."""
    settled = carried = fees = chunk = 0
    while True:
        async with unit_of_work(sessions) as work:
            due = await batches.due_batches(work, BILLERS, day, settings.settlement_posting_chunk)
            if not due:
                break
            posting_day = await clearing.clearing_date(work, settings)
            for batch in due:
                if not batch.postable:
                    await batches.mark_carried(work, BILLERS, day, batch.payee)
                    carried += 1
                    continue
                transaction_id = None
                if batch.total_fee > 0:
                    posted = await ledger.post(work, _fee_posting(day, posting_day, batch))
                    transaction_id = posted.id
                    fees += batch.total_fee
                await batches.mark_posted(
                    work, BILLERS, day, batch.payee,
                    {"settled_on": day, "ledger_transaction_id": transaction_id},
                )  # fmt: skip
                settled += 1
            chunk += 1
            crash_point(f"billers:{chunk}:uncommitted")
        crash_point(f"billers:{chunk}")
    return Posted(settled, carried, fees)


def _fee_posting(day: date, posting_day: date, batch: batches.DueBatch) -> PostingRequest:
    # The payable already holds the day's payments; settling it takes our fees out of it (with
    # those of the carried days it settles), and leaves the net for the biller's payout.
    return PostingRequest(
        idempotency_key=fee_key(day, batch.payee),
        tx_type=FEE_TX_TYPE,
        clearing_date=posting_day,
        entries=[
            Entry(
                AccountRef(AccountKind.biller_payable, batch.payee),
                Side.debit,
                batch.total_fee,
            ),
            Entry(AccountRef(AccountKind.fee_income), Side.credit, batch.total_fee),
        ],
        record_ref=f"biller_batch:{day.isoformat()}:{batch.payee}",
        description=f"fees of {day.isoformat()} for biller {batch.payee}",
    )


async def totals(session: AsyncSession, day: date) -> BatchTotals:
    return await batches.batch_totals(session, BILLERS, day)


async def payable_movement(session: AsyncSession, day: date) -> int:
    """The day's movement of every biller's payable, the settlement's own postings left out."""
    return await repository.payable_movement(session, day)


async def biller_movement(session: AsyncSession, day: date, code: str) -> tuple[int, int]:
    """(transactions, signed fen) of one biller's payable on ``day``, settlement left out."""
    return await repository.biller_movement(session, day, code)


async def problems(session: AsyncSession, day: date) -> list[str]:
    """What does not balance in the billers' day (for the day's money check)."""
    found: list[str] = []
    movement = await repository.payable_movement(session, day)
    totals = await batches.batch_totals(session, BILLERS, day)
    if totals.gross != movement:
        found.append(
            f"biller batches carry {totals.gross} fen but billers' payables moved {movement} fen"
        )
    if unbalanced := await batches.unbalanced_batches(session, BILLERS, day):
        found.append(f"{unbalanced} biller batch(es) where gross != net + fee")
    if totals.due:
        found.append(f"{totals.due} biller batch(es) due and not settled")
    postings = await repository.fee_postings(session, day)
    if postings.keyed != postings.with_fee:
        found.append(
            f"{postings.with_fee - postings.keyed} settled biller batch(es) without their fee "
            "posting"
        )
    if postings.journal != postings.fees:
        found.append(
            f"biller batches settled {postings.fees} fen of fees but their postings "
            f"{postings.journal} fen"
        )
    return found


def batch_rows(session: AsyncSession, day: date) -> AsyncIterator[BatchRow]:
    return repository.batch_rows(session, day)
