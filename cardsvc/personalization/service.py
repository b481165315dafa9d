"""Personalization sessions (DESIGN §6.2, docs/counter-agent.md): the server drives the card.

A session walks the plan of ``apdus.PLAN`` in batches. Each answer of the server is a batch of
APDUs for whoever holds the card (the counter agent, or the in-process link of the development
shortcut), who sends them in order, stops at the first status word other than 9000 and brings the
responses back with the batch's number. A batch ends with the command whose answer the next one
needs (a GET CHALLENGE before a cryptogram), so every challenge, key block and secure-messaging
MAC is made by the HSM here, between two batches, and the counter holds no key.

Every step is idempotent: the same responses to the same batch get the same answer (its digest is
kept), and a batch's outcome is stored only by the first request that brings it (a guarded
update on the batch number). A start for an application whose session is unfinished resumes it
with the same chip and refuses any other: every step before END PERSONALIZATION is repeatable,
so a resume starts again at the session open; once END is done (the transport key is gone) only
the key proof remains. No connection or row lock is held while the HSM works: a step reads in a
short session, asks the HSM, then writes in the caller's transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.applications import service as applications
from cardsvc.applications.models import ApplicationStatus
from cardsvc.audit import service as audit
from cardsvc.cards import service as cards
from cardsvc.cards.models import Card
from cardsvc.errors import Conflict, InvalidStateTransition, NotFound, ValidationFailed
from cardsvc.hsm import CardKeyBlock, HsmClient, HsmError, HsmUnavailable
from cardsvc.personalization import apdus, files, repository
from cardsvc.personalization.apdus import CHALLENGE, PLAN, Op, OpKind
from cardsvc.personalization.models import PersoJob, PersoStatus, PersoStep
from cardsvc.residents import service as residents
from cardsvc.residents.models import Resident
from cardsvc.residents.service import ResidentPii
from cardsvc.settings import Settings

_STEPS = list(PersoStep)
# The step a confirmed op brings the session to.
_CONFIRMS = {
    apdus.AUTH_OP: PersoStep.session_opened,
    apdus.LAST_KEY_OP: PersoStep.keys_written,
    apdus.END_OP: PersoStep.ended,
    apdus.PROOF_OP: PersoStep.proved,
}


class TurnState(StrEnum):
    running = "running"  # send the commands, then bring the responses with this batch's number
    done = "done"  # personalized: the card is ready to hand over
    interrupted = "interrupted"  # the card refused a command: start again with the same card
    failed = "failed"  # the card can never be finished: a supervisor abandons the session


_STATE_OF = {
    PersoStatus.running: TurnState.running,
    PersoStatus.done: TurnState.done,
    PersoStatus.failed: TurnState.interrupted,
    PersoStatus.spoiled: TurnState.failed,
    PersoStatus.abandoned: TurnState.failed,
}


class OtherCardPresented(Conflict):
    """The application's session is bound to another chip."""


class ChipInUse(Conflict):
    """The chip carries another live card, or another application's unfinished session."""


class StepOutOfOrder(Conflict):
    """The responses are not for the batch out at the card (or differ from the ones it got)."""


class SessionClosed(Conflict):
    """The session takes no more steps (done, interrupted, spoiled or abandoned)."""


class SessionSpoiled(Conflict):
    """The session's card can never be finished; a supervisor abandons the session first."""


class PersonalizationInterrupted(Conflict):
    """The card left the reader (or refused a step); a start with the same card resumes."""


class PersonalizationFailed(Conflict):
    """The card can never be finished (for example a key proof that fails)."""


@dataclass(frozen=True, slots=True)
class Turn:
    """The server's answer: the state and, while running, the next batch of commands."""

    session_id: int
    application_id: int
    card_no: str
    chip_serial: str
    state: TurnState
    seq: int
    commands: list[bytes]
    step: int  # plan ops the card has confirmed before this batch
    steps: int
    resumed: bool
    detail: str | None
    apdu_count: int


@dataclass(frozen=True, slots=True)
class _Batch:
    commands: list[tuple[int, bytes]]  # (op number or CHALLENGE, APDU)
    next: int  # the op the following batch starts with

    def dump(self) -> str:
        return json.dumps(
            {"next": self.next, "commands": [[op, apdu.hex()] for op, apdu in self.commands]}
        )

    @classmethod
    def load(cls, raw: str | None) -> _Batch:
        if raw is None:
            return cls([], len(PLAN))
        data = json.loads(raw)
        return cls([(op, bytes.fromhex(apdu)) for op, apdu in data["commands"]], data["next"])

    @property
    def progress(self) -> int:
        return next((op for op, _ in self.commands if op != CHALLENGE), self.next)


def _later(step: PersoStep, other: PersoStep) -> PersoStep:
    return step if _STEPS.index(step) >= _STEPS.index(other) else other


def digest(seq: int, responses: Sequence[bytes]) -> str:
    return hashlib.sha256(f"{seq}:{','.join(r.hex() for r in responses)}".encode()).hexdigest()


def _expiry(settings: Settings, issued_on: date) -> date:
    return date(
        issued_on.year + settings.card_validity_years, issued_on.month, min(issued_on.day, 28)
    )


class _Cryptograms:
    """What the HSM computes for one batch, asked only for the ops the batch holds."""

    def __init__(
        self, hsm: HsmClient, settings: Settings, job: PersoJob, card: Card, resident: Resident
    ) -> None:
        self.hsm, self.settings, self.job, self.card, self.resident = (
            hsm,
            settings,
            job,
            card,
            resident,
        )
        self.serial = bytes.fromhex(job.chip_serial)
        self._blocks: dict[int, CardKeyBlock] | None = None
        self._pii: ResidentPii | None = None

    async def _pii_of(self) -> ResidentPii:
        if self._pii is None:
            self._pii = await residents.reveal(self.hsm, self.resident)
        return self._pii

    async def _file(self, sfi: int) -> bytes:
        card = self.card
        issued = self.job.issued_on or self.settings.local_date(clock.now())
        expiry = _expiry(self.settings, issued)
        if sfi == 0x15:
            return files.public_info(card, start=issued, expiry=expiry)
        if sfi == 0x05:
            return files.ss_card_info(card, start=issued, expiry=expiry)
        pii = await self._pii_of()
        if sfi == 0x16:
            return files.holder_info(card, name=pii.name, resident_id=pii.resident_id)
        return files.ss_holder_info(
            resident_id=pii.resident_id, name=pii.name, sex=self.resident.sex,
            birth_date=pii.birth_date,
        )  # fmt: skip

    async def command(self, op: Op, challenge: bytes) -> bytes:
        hsm, card = self.hsm, self.card
        if op.kind is OpKind.auth:
            return apdus.external_authenticate(await hsm.perso_auth(self.serial, challenge))
        if op.kind is OpKind.key:
            if self._blocks is None:
                exported = await hsm.card_keys_export(
                    bytes.fromhex(card.asn), self.serial, card.key_version
                )
                self._blocks = {block.key_id: block for block in exported}
            data = self._blocks[op.arg].block
            header = apdus.write_key_header(op.arg, data)
        else:
            data = await self._file(op.arg)
            header = apdus.update_binary_header(op.arg, data)
        return header + data + await hsm.perso_mac(self.serial, challenge, header + data)


def _plain(settings: Settings, op: Op) -> bytes:
    if op.kind is OpKind.proof:
        return apdus.initialize_for_load(bytes.fromhex(settings.counter_terminal_no))
    return op.apdu


async def _build(
    settings: Settings, crypto: _Cryptograms | None, start: int, challenge: bytes | None
) -> _Batch:
    """Commands from op ``start`` on, up to and including the next GET CHALLENGE whose answer a
    cryptogram needs (or the end of the plan). A batch that starts without a challenge asks
    nothing of the HSM (``crypto`` may be None)."""
    commands: list[tuple[int, bytes]] = []
    at = start
    while at < len(PLAN):
        op = PLAN[at]
        if op.challenge_size:
            if challenge is None:
                commands.append((CHALLENGE, apdus.get_challenge(op.challenge_size)))
                break
            assert crypto is not None  # noqa: S101 - a challenge comes only with a step
            commands.append((at, await crypto.command(op, challenge)))
            challenge = None
        else:
            commands.append((at, _plain(settings, op)))
        at += 1
    return _Batch(commands, at)


def _turn(job: PersoJob, card_no: str, *, resumed: bool = False, detail: str | None = None) -> Turn:
    batch = _Batch.load(job.batch)
    running = job.status is PersoStatus.running
    return Turn(
        session_id=job.id,
        application_id=job.application_id,
        card_no=card_no,
        chip_serial=job.chip_serial,
        state=_STATE_OF[job.status],
        seq=job.seq,
        commands=[apdu for _, apdu in batch.commands] if running else [],
        step=len(PLAN) if job.status is PersoStatus.done else batch.progress,
        steps=len(PLAN),
        resumed=resumed,
        detail=detail if detail is not None else job.error,
        apdu_count=job.apdu_count,
    )


async def start(
    session: AsyncSession,
    settings: Settings,
    application_id: int,
    *,
    atr: bytes,
    reader: str,
    actor: str,
) -> Turn:
    """Start (or resume) the session of an approved or in-production application for the blank
    card whose ATR this is. Asks nothing of the HSM: the first batch is fixed."""
    try:
        serial = apdus.chip_serial_of(atr).hex().upper()
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from exc
    application = await applications.get(session, application_id, for_update=True)
    if application.status is ApplicationStatus.approved:
        await applications.start_production(session, settings, application_id, actor=actor)
    elif application.status is not ApplicationStatus.in_production:
        raise InvalidStateTransition(
            f"cannot personalize an application that is {application.status.value}"
        )
    card = await applications.card_of(session, application)
    await cards.require_chip_free(session, serial, card)
    job = await repository.for_application(session, application_id, for_update=True)
    holder = await repository.live_with_chip(session, serial)
    if holder is not None and holder.application_id != application_id:
        raise ChipInUse(
            f"chip {serial} is being personalized for application {holder.application_id}: "
            "finish that one, or present a blank card"
        )
    resumed = job is not None and job.status is not PersoStatus.abandoned
    if job is None:
        job = await repository.add(
            session,
            PersoJob(
                application_id=application_id, card_id=card.id, chip_serial=serial,
                reader=reader, step=PersoStep.started, status=PersoStatus.running, attempts=0,
                apdu_count=0, seq=0,
            ),
        )  # fmt: skip
    elif job.status is PersoStatus.abandoned:
        job.chip_serial, job.step, job.apdu_count = serial, PersoStep.started, 0
    elif job.chip_serial != serial:
        raise OtherCardPresented(
            f"application {application_id} is being personalized on chip {job.chip_serial}: "
            "put that card back (or a supervisor abandons the session to take another card)"
        )
    elif job.status is PersoStatus.spoiled:
        raise SessionSpoiled(
            f"chip {serial} cannot be finished ({job.error}): a supervisor abandons the session, "
            "then personalize a new blank card"
        )
    elif job.status is PersoStatus.done:
        raise InvalidStateTransition("this application's card is already personalized")
    if job.issued_on is None or not resumed:
        job.issued_on = settings.local_date(clock.now())
    first = apdus.PROOF_FROM if job.step in (PersoStep.ended, PersoStep.proved) else 0
    batch = await _build(settings, None, first, None)
    job.card_id, job.reader, job.started_by = card.id, reader, actor
    job.status, job.error, job.batch, job.answered_digest = (
        PersoStatus.running,
        None,
        batch.dump(),
        None,
    )
    job.attempts += 1
    job.seq += 1
    job.updated_at = clock.now()
    try:
        await session.flush()
    except IntegrityError as exc:  # another start took the chip between our read and write
        raise ChipInUse(f"chip {serial} is being personalized for another application") from exc
    return _turn(job, card.card_no, resumed=resumed)


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: PersoStatus
    step: PersoStep
    batch: _Batch | None
    error: str | None = None


def _refused(job: PersoJob, step: PersoStep, op_no: int, sw: int) -> _Outcome | None:
    """What a refusal means; None when the plan goes on (a resume that finds END was done)."""
    if op_no == apdus.AUTH_OP and sw == 0x6985:
        if step in (PersoStep.files_written, PersoStep.ended):
            return None  # END went through unrecorded: only the key proof remains
        return _Outcome(
            PersoStatus.spoiled,
            step,
            None,
            f"chip {job.chip_serial} has no transport key: it is not a blank card",
        )
    what = "get challenge" if op_no == CHALLENGE else PLAN[op_no].what
    return _Outcome(
        PersoStatus.failed,
        step,
        None,
        f"the card refused to {what} (SW {sw:04X}): put the same card back and start again",
    )


async def _outcome(
    hsm: HsmClient,
    settings: Settings,
    job: PersoJob,
    card: Card,
    resident: Resident,
    responses: Sequence[bytes],
) -> _Outcome:
    batch = _Batch.load(job.batch)
    if not 1 <= len(responses) <= len(batch.commands):
        raise ValidationFailed(
            f"batch {job.seq} has {len(batch.commands)} commands: bring 1 to "
            f"{len(batch.commands)} responses"
        )
    step, challenge, proof = job.step, None, None
    crypto = _Cryptograms(hsm, settings, job, card, resident)
    for i, raw in enumerate(responses):
        op_no = batch.commands[i][0]
        data, sw = raw[:-2], int.from_bytes(raw[-2:], "big")
        if sw != 0x9000:
            if i != len(responses) - 1:
                raise ValidationFailed(
                    f"response {i + 1} is a refusal (SW {sw:04X}): stop the batch there"
                )
            refused = _refused(job, step, op_no, sw)
            if refused is not None:
                return refused
            step = PersoStep.ended
            return _Outcome(
                PersoStatus.running, step, await _build(settings, crypto, apdus.PROOF_FROM, None)
            )
        if op_no == CHALLENGE:
            challenge = data
        else:
            step = _later(step, _CONFIRMS.get(op_no, PersoStep.started))
            if op_no == apdus.PROOF_OP:
                proof = data
    if len(responses) < len(batch.commands):
        raise ValidationFailed(
            f"batch {job.seq} has {len(batch.commands)} commands and every one answered 9000: "
            "bring every response"
        )
    if challenge is not None and len(challenge) != PLAN[batch.next].challenge_size:
        return _Outcome(
            PersoStatus.failed, step, None,
            "the card answered a challenge of the wrong size: put the same card back and start again",
        )  # fmt: skip
    if proof is not None:
        try:
            init = apdus.LoadInit.parse(proof)
            await hsm.load_authorize(
                asn=bytes.fromhex(card.asn), key_version=init.key_version, random=init.random,
                online_counter=init.online_counter, balance_before=init.balance, amount=0,
                tx_type=apdus.TX_LOAD_EP, terminal_no=bytes.fromhex(settings.counter_terminal_no),
                mac1=init.mac1,
                host_datetime=clock.now().astimezone(settings.zone).strftime("%Y%m%d%H%M%S"),
            )  # fmt: skip
        except HsmUnavailable:
            raise
        except (HsmError, ValueError) as exc:
            code = exc.code if isinstance(exc, HsmError) else "malformed answer"
            return _Outcome(
                PersoStatus.spoiled, step, None, f"the card's keys do not prove out ({code})"
            )
    if batch.next >= len(PLAN):
        return _Outcome(PersoStatus.done, PersoStep.proved, None)
    following = await _build(settings, crypto, batch.next, challenge)
    if any(op == apdus.END_OP for op, _ in following.commands):
        step = _later(step, PersoStep.files_written)
    return _Outcome(PersoStatus.running, step, following)


async def step(
    reads: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    hsm: HsmClient,
    settings: Settings,
    session_id: int,
    *,
    seq: int,
    responses: Sequence[bytes],
    actor: str,
) -> Turn:
    """Take the card's responses to batch ``seq``; answer with the next batch (or the end)."""
    answered = digest(seq, responses)
    async with reads() as read:
        job = await repository.get(read, session_id)
        if job is None:
            raise NotFound(f"no personalization session {session_id}")
        application = await applications.get(read, job.application_id)
        card = await applications.card_of(read, application, for_update=False)
        if seq == job.seq - 1 and job.answered_digest == answered:
            return _turn(job, card.card_no)  # the same responses again: the same answer
        if seq != job.seq:
            raise StepOutOfOrder(
                f"batch {seq} is not the one out at the card (batch {job.seq}): start again to resume"
            )
        if job.status is not PersoStatus.running:
            raise SessionClosed(
                f"the session is {_STATE_OF[job.status].value}: "
                + ("start again to resume" if job.status is PersoStatus.failed else "it takes no steps")
            )  # fmt: skip
        if application.status is not ApplicationStatus.in_production:
            raise InvalidStateTransition(
                f"cannot personalize an application that is {application.status.value}"
            )
        resident = await residents.get(read, card.resident_id)
    outcome = await _outcome(hsm, settings, job, card, resident, responses)
    done = outcome.status is PersoStatus.done
    if done:
        # The application and its card first, as a start locks them, then the session.
        application = await applications.get(session, job.application_id, for_update=True)
        card = await applications.card_of(session, application)
    now = clock.now()
    stored = await repository.advance(
        session,
        job.id,
        seq,
        status=outcome.status,
        step=outcome.step,
        batch=outcome.batch.dump() if outcome.batch is not None else None,
        answered_digest=answered,
        error=outcome.error,
        apdu_count=PersoJob.apdu_count + len(responses),
        updated_at=now,
        finished_at=now if done else None,
    )
    if not stored:
        raise StepOutOfOrder(f"batch {seq} was answered by another request: start again to resume")
    if done:
        await applications.mark_personalized(
            session, application, card, chip_serial=job.chip_serial, actor=actor
        )
    fresh = await repository.get(session, job.id)
    assert fresh is not None  # noqa: S101
    await session.refresh(fresh)
    return _turn(fresh, card.card_no)


async def abandon(session: AsyncSession, session_id: int, *, actor: str) -> Turn:
    """A supervisor gives the session's chip up (a spoiled or lost blank card): the next start
    takes another card. A finished session cannot be abandoned."""
    job = await repository.get(session, session_id)
    if job is None:
        raise NotFound(f"no personalization session {session_id}")
    await session.refresh(job, with_for_update=True)
    if job.status is PersoStatus.done:
        raise InvalidStateTransition("the session is done: its card is personalized")
    if job.status is not PersoStatus.abandoned:
        before = {"status": job.status.value, "step": job.step.value}
        job.status, job.batch, job.updated_at = PersoStatus.abandoned, None, clock.now()
        job.seq += 1
        await session.flush()
        await audit.record(
            session, actor=actor, action="personalization.abandon", entity="application",
            entity_id=str(job.application_id), before=before,
            after={"status": job.status.value, "chip_serial": job.chip_serial},
        )  # fmt: skip
    application = await applications.get(session, job.application_id)
    card = await applications.card_of(session, application, for_update=False)
    return _turn(job, card.card_no)
