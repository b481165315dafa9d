"""The development shortcut: a card in this process (a virtual card, or a reader on this machine
in development) personalized through the same session service the counter agent uses over the
API, each step in a unit of work of its own, as a request would be."""

from __future__ import annotations

import time
from dataclasses import dataclass

from cardsvc.db import read_sessions, unit_of_work
from cardsvc.logging import get_logger
from cardsvc.personalization import service
from cardsvc.personalization.service import (
    PersonalizationFailed,
    PersonalizationInterrupted,
    TurnState,
)
from cardsvc.reader.errors import CardError
from cardsvc.reader.link import CardLink
from cardsvc.reader.relay import relay
from cardsvc.resources import Resources

log = get_logger(__name__)


@dataclass(frozen=True)
class PersoResult:
    application_id: int
    card_no: str
    chip_serial: str
    apdu_count: int
    seconds: float
    resumed: bool


async def personalize(
    resources: Resources, link: CardLink, application_id: int, *, reader: str, actor: str
) -> PersoResult:
    """Personalize the blank card in ``link`` for an approved or in-production application
    (resumable: run it again with the same card)."""
    started = time.perf_counter()
    async with unit_of_work(resources.sessions) as session:
        turn = await service.start(
            session, resources.settings, application_id, atr=link.atr(), reader=reader, actor=actor
        )
    sent, resumed = 0, turn.resumed
    reads = read_sessions(resources.engine)
    while turn.state is TurnState.running:
        try:
            responses = relay(link, turn.commands)
        except CardError as exc:
            log.warning("personalization.interrupted", application=application_id, error=exc.detail)
            raise PersonalizationInterrupted(
                f"personalization stopped: {exc.detail}; put the same card back and run it "
                "again to resume"
            ) from exc
        sent += len(responses)
        async with unit_of_work(resources.sessions) as session:
            turn = await service.step(
                reads, session, resources.hsm, resources.settings, turn.session_id,
                seq=turn.seq, responses=responses, actor=actor,
            )  # fmt: skip
    if turn.state is TurnState.interrupted:
        raise PersonalizationInterrupted(f"personalization stopped: {turn.detail}")
    if turn.state is TurnState.failed:
        raise PersonalizationFailed(f"personalization failed: {turn.detail}")
    return PersoResult(
        application_id, turn.card_no, turn.chip_serial, sent, time.perf_counter() - started,
        resumed,
    )  # fmt: skip
