"""Card jobs: move balances after the waiting period; expire cards past their date.

``release_balances`` is idempotent: each release is handled in its own unit of work under a row
lock, skipped once ``done``, and posted with the idempotency key ``card-release:<id>``, so a crash
between the posting and the status update replays the same ledger transaction (DESIGN §8, §10).
The float is read under its account lock in the step that posts it, so what moves is exactly
what the card's float holds at that moment. A release that fails is rolled back, counted on its
row (``failures``, ``last_error``), reported, and tried again at the next run; the releases
after it go on.

Where each balance goes:

- a replaced card's, to its replacement's transfer account (loaded onto the new chip by a
  ``transfer`` load), once the replacement card exists; if the replacement application is
  rejected, the balance goes home to the resident's online account instead (a kiosk or counter
  loads it onto the resident's next card, or a counter pays it out);
- a cancelled card's, to the resident's online account, or, for a cash refund, to a payable owed
  to the holder (``holder_payable``) that a counter pays out (``cards.service.pay_out_cash_refund``):
  a release never depends on what a drawer holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.applications import service as applications
from cardsvc.applications.models import ApplicationStatus
from cardsvc.audit import service as audit
from cardsvc.cards import repository
from cardsvc.cards import service as cards
from cardsvc.cards.models import BalanceRelease, Card, ReleaseKind, ReleaseStatus
from cardsvc.cards.numbers import mask_card_no
from cardsvc.clearing import service as clearing
from cardsvc.db import unit_of_work
from cardsvc.jobs.worker import Job
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.logging import get_logger, mask_text
from cardsvc.resources import Storage
from cardsvc.settings import Settings

log = get_logger(__name__)
ACTOR = "system:release-balances"


class ReleasesFailed(RuntimeError):
    """Some releases failed (each kept and retried next run); the others were done."""


@dataclass
class ReleaseReport:
    moved: int = 0
    amount: int = 0
    zero: int = 0
    waiting_for_card: int = 0
    failed: int = 0
    ids: list[int] = field(default_factory=list)
    failed_ids: list[int] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"moved {self.moved} balances ({self.amount} fen); {self.zero} empty; "
            f"{self.waiting_for_card} wait for their new card"
        )
        if self.failed:
            text += f"; {self.failed} failed, kept for the next run: releases {self.failed_ids}"
        return text


async def _target(session: AsyncSession, release: BalanceRelease, old: Card) -> AccountRef | None:
    """Where the balance goes; None while a replacement card has no number yet."""
    if release.kind is ReleaseKind.to_new_card:
        assert release.replacement_application_id is not None  # noqa: S101
        application = await applications.find(session, release.replacement_application_id)
        if application is not None and application.status is ApplicationStatus.rejected:
            # No replacement will ever exist: the balance goes to the resident's online account.
            release.kind, release.refund_to = ReleaseKind.refund, "resident_account"
            release.refund_ref = str(old.resident_id)
        elif application is None or application.card_id is None:
            return None  # the new card has no number yet; try again on the next run
        else:
            new_card = await repository.get(session, application.card_id)
            assert new_card is not None  # noqa: S101
            # Not onto the new card's float: the chip does not hold it until a transfer load.
            return AccountRef(AccountKind.card_transfer, new_card.card_no)
    if release.refund_to == "counter_cash":
        # Owed to the holder until a counter pays it out, whatever any drawer holds now.
        return AccountRef(AccountKind.holder_payable, str(old.resident_id))
    return AccountRef(AccountKind.resident_account, release.refund_ref or str(old.resident_id))


async def release_one(
    session: AsyncSession, release_id: int, settings: Settings, now: datetime
) -> tuple[str, int]:
    """Handle one due release; returns (outcome, amount). Posted on the open clearing day."""
    release = await repository.lock_release(session, release_id)
    if release is None or release.status is ReleaseStatus.done:
        return "skipped", 0
    old = await repository.get(session, release.card_id)
    assert old is not None  # noqa: S101
    kind = release.kind
    target = await _target(session, release, old)
    if target is None:
        return "waiting_for_card", 0
    source = AccountRef(AccountKind.card_float, old.card_no)
    amount = await ledger.locked_balance(session, source)
    tx_id = None
    if amount > 0:
        posted = await ledger.post(
            session,
            PostingRequest(
                idempotency_key=f"card-release:{release.id}",
                tx_type="transfer" if release.kind is ReleaseKind.to_new_card else "refund",
                clearing_date=await clearing.clearing_date(session, settings, now=now),
                entries=[Entry(source, Side.debit, amount), Entry(target, Side.credit, amount)],
                record_ref=f"card_balance_release:{release.id}",
                description=f"{release.kind.value} balance of card {mask_card_no(old.card_no)}",
            ),
        )
        tx_id = posted.id
    release.status, release.amount, release.ledger_transaction_id, release.done_at = (
        ReleaseStatus.done,
        amount,
        tx_id,
        clock.now(),
    )
    await session.flush()
    after: dict[str, object] = {
        "card": mask_card_no(old.card_no),
        "amount": amount,
        "to": target.kind.value,
        "ledger_transaction": tx_id,
    }
    if release.kind is not kind:
        after["because"] = "replacement application rejected"
    await audit.record(
        session,
        actor=ACTOR,
        action=f"card.release_{release.kind.value}",
        entity="card",
        entity_id=str(old.id),
        after=after,
    )
    return ("moved" if amount > 0 else "zero"), amount


async def _keep_failure(
    sessions: async_sessionmaker[AsyncSession], release_id: int, error: Exception
) -> None:
    async with unit_of_work(sessions) as session:
        release = await repository.lock_release(session, release_id)
        if release is not None:
            release.failures += 1
            release.last_error = mask_text(f"{type(error).__name__}: {error}")[:200]
            release.last_attempt_at = clock.now()


async def release_balances(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, now: datetime | None = None
) -> ReleaseReport:
    """Every due release, each in its own unit of work; a failing one does not stop the rest."""
    now = now or clock.now()
    report = ReleaseReport()
    async with sessions() as session:
        due = await repository.due_release_ids(session, now)
    for release_id in due:
        try:
            async with unit_of_work(sessions) as session:
                outcome, amount = await release_one(session, release_id, settings, now)
        except Exception as error:  # one release's failure must not hold up the others
            log.error("cards.release_failed", release_id=release_id, exc_info=error)
            await _keep_failure(sessions, release_id, error)
            report.failed += 1
            report.failed_ids.append(release_id)
            continue
        if outcome == "moved":
            report.moved += 1
            report.amount += amount
            report.ids.append(release_id)
        elif outcome == "zero":
            report.zero += 1
            report.ids.append(release_id)
        elif outcome == "waiting_for_card":
            report.waiting_for_card += 1
    log.info(
        "cards.release_balances",
        moved=report.moved,
        amount=report.amount,
        zero=report.zero,
        waiting=report.waiting_for_card,
        failed=report.failed,
    )
    return report


async def expire_due(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, now: datetime | None = None
) -> int:
    """Active cards whose expiry date has passed become ``expired``."""
    today = settings.local_date(now or clock.now())
    async with sessions() as session:
        ids = await repository.expired_active_ids(session, today)
    for card_id in ids:
        async with unit_of_work(sessions) as session:
            card = await repository.get(session, card_id, for_update=True)
            if card is not None:
                await cards.expire(session, card, actor="system:expire-cards")
    return len(ids)


async def _release_balances_job(storage: Storage, now: datetime) -> str:
    report = await release_balances(storage.sessions, storage.settings, now)
    if report.failed:
        # The job counts as failed (metrics, --once's exit status); the rest was done.
        raise ReleasesFailed(report.summary())
    return report.summary()


async def _expire_cards_job(storage: Storage, now: datetime) -> str:
    count = await expire_due(storage.sessions, storage.settings, now)
    return f"expired {count} cards"


RELEASE_BALANCES = Job(
    "release-balances", lambda s: s.worker_card_jobs_interval_seconds, _release_balances_job
)
EXPIRE_CARDS = Job("expire-cards", lambda s: s.worker_card_jobs_interval_seconds, _expire_cards_job)
