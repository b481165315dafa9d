"""Counter personalization (DESIGN §6.2): prepare the job, run the card steps, record progress.

The job is recorded step by step in its own units of work (the job commits, as any job does), so a
card pulled out mid-way leaves a resumable job. Every step before END PERSONALIZATION is
repeatable, so a resume restarts from the session open; once END is done (the transport key is
gone) a resume goes straight to the proof. The application becomes ``personalized`` only after
every step and the key proof succeeded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.applications import service as applications
from cardsvc.applications.models import ApplicationStatus
from cardsvc.cards import service as cards
from cardsvc.cards.models import Card
from cardsvc.db import unit_of_work
from cardsvc.errors import Conflict, InvalidStateTransition
from cardsvc.hsm import HsmClient, HsmError
from cardsvc.logging import get_logger
from cardsvc.personalization import apdus, files, repository
from cardsvc.personalization.models import PersoJob, PersoStatus, PersoStep
from cardsvc.reader.errors import CardError, ConditionsNotSatisfied
from cardsvc.reader.link import CardLink
from cardsvc.residents import repository as residents_repo
from cardsvc.residents import service as residents
from cardsvc.settings import Settings

log = get_logger(__name__)

_ORDER = list(PersoStep)


class PersonalizationInterrupted(Conflict):
    """The card left the reader (or refused a step); the job can be resumed with the same card."""


class PersonalizationFailed(Conflict):
    """A step failed for a reason other than the card leaving (for example a key proof that fails)."""


@dataclass(frozen=True)
class PersoResult:
    application_id: int
    card_no: str
    chip_serial: str
    apdu_count: int
    seconds: float
    resumed: bool


@dataclass(frozen=True)
class _Plan:
    job_id: int
    card: Card
    start: PersoStep
    resumed: bool
    resident_id: str
    name: str
    sex: str
    birth_date: date


def _after(step: PersoStep, other: PersoStep) -> bool:
    return _ORDER.index(step) >= _ORDER.index(other)


async def _prepare(
    session: AsyncSession, hsm: HsmClient, application_id: int, serial_hex: str, reader: str
) -> _Plan:
    application = await applications.get(session, application_id, for_update=True)
    if application.status is not ApplicationStatus.in_production:
        raise InvalidStateTransition(
            f"cannot personalize an application that is {application.status.value}"
        )
    card = await applications.card_of(session, application)
    # Before any APDU, resumed or not: a chip that carries another live card is not blank.
    await cards.require_chip_free(session, serial_hex, card)
    resident = await residents_repo.get(session, application.resident_id)
    assert resident is not None  # noqa: S101 - foreign key
    pii = await residents.reveal(hsm, resident)
    job = await repository.for_application(session, application_id, for_update=True)
    resumed = job is not None
    if job is None:
        job = await repository.add(
            session,
            PersoJob(
                application_id=application_id,
                card_id=card.id,
                chip_serial=serial_hex,
                reader=reader,
                step=PersoStep.started,
                status=PersoStatus.running,
                attempts=1,
                apdu_count=0,
            ),
        )
        start = PersoStep.started
    else:
        job.attempts += 1
        job.status, job.error, job.reader = PersoStatus.running, None, reader
        if job.chip_serial != serial_hex:
            # Another blank card: start it from the beginning (the first chip is spoiled if it ended).
            job.chip_serial, job.step = serial_hex, PersoStep.started
        # Before END every step is repeatable: restart at the session open; after END only the proof.
        start = PersoStep.ended if _after(job.step, PersoStep.ended) else PersoStep.started
        job.updated_at = clock.now()
        await session.flush()
    return _Plan(
        job.id, card, start, resumed, pii.resident_id, pii.name, resident.sex, pii.birth_date
    )


async def _record(
    sessions: async_sessionmaker[AsyncSession],
    job_id: int,
    *,
    step: PersoStep | None = None,
    status: PersoStatus | None = None,
    error: str | None = None,
    apdus_sent: int = 0,
) -> None:
    async with unit_of_work(sessions) as session:
        job = await session.get(PersoJob, job_id, with_for_update=True)
        assert job is not None  # noqa: S101
        if step is not None:
            job.step = step
        if status is not None:
            job.status = status
            if status is PersoStatus.done:
                job.finished_at = clock.now()
        job.error = error
        job.apdu_count += apdus_sent
        job.updated_at = clock.now()


def _host_datetime(settings: Settings) -> str:
    return clock.now().astimezone(settings.zone).strftime("%Y%m%d%H%M%S")


async def personalize(
    sessions: async_sessionmaker[AsyncSession],
    hsm: HsmClient,
    settings: Settings,
    link: CardLink,
    application_id: int,
    *,
    reader: str,
    actor: str,
) -> PersoResult:
    """Personalize the blank card in ``link`` for an application in production (resumable)."""
    started = time.perf_counter()
    counted = apdus.CountingLink(link)
    serial = apdus.chip_serial_of(link.atr())
    async with unit_of_work(sessions) as session:
        plan = await _prepare(session, hsm, application_id, serial.hex().upper(), reader)
    card = plan.card
    asn = bytes.fromhex(card.asn)
    today = clock.now().astimezone(settings.zone).date()
    expiry = date(today.year + settings.card_validity_years, today.month, min(today.day, 28))
    step = plan.start
    try:
        if step is PersoStep.started:
            try:
                await apdus.open_session(counted, hsm, serial)
            except ConditionsNotSatisfied:
                # 6985: no transport key any more. If the files were written before, END went
                # through without being recorded; the proof below tells whether the keys are right.
                async with unit_of_work(sessions) as session:
                    job = await session.get(PersoJob, plan.job_id)
                    recorded = job.step if job else PersoStep.started
                if recorded is not PersoStep.files_written:
                    raise
                step = PersoStep.ended
            else:
                await _record(sessions, plan.job_id, step=PersoStep.session_opened)
                await apdus.write_keys(counted, hsm, serial, asn, card.key_version)
                await _record(sessions, plan.job_id, step=PersoStep.keys_written)
                apdus.select(counted, apdus.PURSE_AID)
                await apdus.write_binary(
                    counted, hsm, serial, 0x15, files.public_info(card, start=today, expiry=expiry)
                )
                await apdus.write_binary(
                    counted,
                    hsm,
                    serial,
                    0x16,
                    files.holder_info(card, name=plan.name, resident_id=plan.resident_id),
                )
                apdus.select(counted, apdus.SS_NAME)
                await apdus.write_binary(
                    counted, hsm, serial, 0x05, files.ss_card_info(card, start=today, expiry=expiry)
                )
                await apdus.write_binary(
                    counted, hsm, serial, 0x06,
                    files.ss_holder_info(resident_id=plan.resident_id, name=plan.name, sex=plan.sex, birth_date=plan.birth_date),
                )  # fmt: skip
                await _record(sessions, plan.job_id, step=PersoStep.files_written)
                apdus.end_personalization(counted)
                await _record(sessions, plan.job_id, step=PersoStep.ended)
        await apdus.prove_load_key(
            counted,
            hsm,
            asn=asn,
            terminal_no=bytes.fromhex(settings.counter_terminal_no),
            host_datetime=_host_datetime(settings),
        )
    except CardError as exc:
        await _record(
            sessions,
            plan.job_id,
            status=PersoStatus.failed,
            error=exc.detail,
            apdus_sent=counted.count,
        )
        log.warning("personalization.interrupted", application=application_id, error=exc.detail)
        raise PersonalizationInterrupted(
            f"personalization stopped: {exc.detail}; put the same card back and run it again to resume"
        ) from exc
    except HsmError as exc:
        await _record(
            sessions,
            plan.job_id,
            status=PersoStatus.failed,
            error=f"{exc.code}: {exc.message}",
            apdus_sent=counted.count,
        )
        raise PersonalizationFailed(f"the card's keys do not prove out ({exc.code})") from exc
    async with unit_of_work(sessions) as session:
        application = await applications.get(session, application_id, for_update=True)
        fresh = await applications.card_of(session, application)
        await applications.mark_personalized(
            session, application, fresh, chip_serial=serial.hex().upper(), actor=actor
        )
        job = await session.get(PersoJob, plan.job_id, with_for_update=True)
        assert job is not None  # noqa: S101
        job.step, job.status, job.error = PersoStep.proved, PersoStatus.done, None
        job.apdu_count += counted.count
        job.finished_at = job.updated_at = clock.now()
    return PersoResult(
        application_id,
        card.card_no,
        serial.hex().upper(),
        counted.count,
        time.perf_counter() - started,
        plan.resumed,
    )
