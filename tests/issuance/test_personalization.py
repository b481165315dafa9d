"""Personalization over the in-process link: keys and files on the card, resume after a pull."""

from __future__ import annotations

import httpx
import pytest

from cardsvc.personalization import files
from cardsvc.personalization import repository as perso_repo
from cardsvc.personalization.models import PersoStatus, PersoStep
from cardsvc.personalization.service import PersonalizationInterrupted
from cardsvc.reader.link import InProcessLink
from cardsvc.reader.purse import read_card
from cardsvc.resources import Resources
from terminals.devices.card import VirtualCard, make_blank_card
from tests.factories import resident_id
from tests.issuance.flow import personalize_card, register_and_apply

SERIAL = bytes.fromhex("5A5A000011112222")


async def test_personalize_and_handover(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
) -> None:
    rid = resident_id()
    _, application, card_no = await register_and_apply(
        client, operator, supervisor, resident_id=rid, name="王小明"
    )
    card = make_blank_card(SERIAL)
    with InProcessLink(card) as link:
        result = await personalize_card(resources, link, application)
        snapshot = read_card(link)
    assert result.card_no == card_no
    assert result.chip_serial == SERIAL.hex().upper()
    assert snapshot.card_no == card_no
    assert files.decode_text(snapshot.ef0016[2:22], "gbk") == "王小明"
    assert files.decode_text(snapshot.ef0016[22:54], "ascii") == rid
    assert snapshot.ef06 is not None
    assert snapshot.ef06[:18].decode() == rid
    assert card.state.transport_key is None  # END PERSONALIZATION done
    r = await client.get(f"/api/v1/applications/{application}", headers=operator)
    assert r.json()["status"] == "personalized"
    r = await client.post(f"/api/v1/applications/{application}/handover", headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"
    # personalizing the same application again is refused
    with (
        pytest.raises(Exception, match=r"personalized|issued"),
        InProcessLink(make_blank_card(SERIAL)) as link,
    ):
        await personalize_card(resources, link, application)


class PulledCard(VirtualCard):
    """Answers ``budget`` APDUs, then behaves like a card pulled from the reader."""

    budget = 10_000

    def process(self, apdu: bytes) -> bytes:
        if self.budget <= 0:
            raise ConnectionError("card pulled out")
        self.budget -= 1
        return super().process(apdu)


@pytest.mark.parametrize("budget", [3, 12, 27])
async def test_pulled_card_resumes(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
    budget: int,
) -> None:
    _, application, _ = await register_and_apply(
        client, operator, supervisor, resident_id=resident_id(), name="李雷"
    )
    blank = make_blank_card(SERIAL)
    card = PulledCard(blank.state)
    card.budget = budget
    with (
        pytest.raises(PersonalizationInterrupted, match="put the same card back"),
        InProcessLink(card) as link,
    ):
        await personalize_card(resources, link, application)
    r = await client.get(f"/api/v1/applications/{application}", headers=operator)
    assert r.json()["status"] == "in_production"  # never personalized on a partial run
    card.budget = 10_000
    with InProcessLink(card) as link:
        result = await personalize_card(resources, link, application)
    assert result.resumed
    r = await client.get(f"/api/v1/applications/{application}", headers=operator)
    assert r.json()["status"] == "personalized"


class TornAtEnd(VirtualCard):
    """Commits END PERSONALIZATION (80EE), then loses power before answering (a torn card)."""

    def process(self, apdu: bytes) -> bytes:
        if apdu[:2] == b"\x80\xee":
            self.tear_next_commit()
        return super().process(apdu)


async def test_pulled_after_end_personalization_resumes_to_a_good_card(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
) -> None:
    rid = resident_id("321102", "19870716", "432")
    _, application, card_no = await register_and_apply(
        client, operator, supervisor, resident_id=rid, name="韩梅梅"
    )
    card = TornAtEnd(make_blank_card(SERIAL).state)
    with (
        pytest.raises(PersonalizationInterrupted, match="put the same card back"),
        InProcessLink(card) as link,
    ):
        await personalize_card(resources, link, application)
    # The card did END (its transport key is gone) but the job never recorded it.
    assert card.state.transport_key is None
    async with resources.sessions() as session:
        job = await perso_repo.for_application(session, application)
        assert job is not None
        assert job.step is PersoStep.files_written  # END was sent, its answer never came back
        assert job.status is PersoStatus.running  # the server does not know the card left
    r = await client.get(f"/api/v1/applications/{application}", headers=operator)
    assert r.json()["status"] == "in_production"
    # Resume with the same card: the session open answers 6985 (no transport key), the recorded
    # step says the files were written, so only the key proof remains; it must pass.
    with InProcessLink(card) as link:
        result = await personalize_card(resources, link, application)
        snapshot = read_card(link)
    assert result.resumed
    assert result.card_no == card_no
    assert snapshot.card_no == card_no
    assert files.decode_text(snapshot.ef0016[2:22], "gbk") == "韩梅梅"
    assert files.decode_text(snapshot.ef0016[22:54], "ascii") == rid
    assert len(card.state.keys) == 7  # every key was written before END
    async with resources.sessions() as session:
        job = await perso_repo.for_application(session, application)
        assert job is not None
        assert (job.step, job.status, job.attempts) == (PersoStep.proved, PersoStatus.done, 2)
    r = await client.post(f"/api/v1/applications/{application}/handover", headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"
