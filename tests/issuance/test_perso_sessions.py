"""The personalization session API (docs/counter-agent.md) driven over HTTP, the card in this
process or behind pcscd + vpcd: the server sends every APDU, the test only relays them."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest

from cardsvc.personalization import files
from cardsvc.reader.link import CardLink, InProcessLink
from cardsvc.reader.purse import read_card
from cardsvc.reader.relay import relay
from terminals.devices.card import VirtualCard, make_blank_card
from tests.conftest_pcsc import Connect, connect
from tests.factories import resident_id
from tests.issuance.flow import register_and_apply

__all__ = ["connect"]

CHIP = bytes.fromhex("C0FFEE0000000001")
OTHER_CHIP = bytes.fromhex("C0FFEE0000000002")
SESSIONS = "/api/v1/personalization/sessions"


async def _start(
    client: httpx.AsyncClient, headers: dict[str, str], application: int, atr: bytes
) -> httpx.Response:
    return await client.post(
        SESSIONS, json={"application_id": application, "atr": atr.hex()}, headers=headers
    )


async def _step(
    client: httpx.AsyncClient, headers: dict[str, str], turn: dict[str, Any], responses: list[bytes]
) -> httpx.Response:
    return await client.post(
        f"{SESSIONS}/{turn['session_id']}/steps",
        json={"seq": turn["seq"], "responses": [r.hex() for r in responses]},
        headers=headers,
    )


async def _drive(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    link: CardLink,
    turn: dict[str, Any],
    *,
    batches: int | None = None,
) -> dict[str, Any]:
    """Relay batches until the session leaves ``running`` (or ``batches`` were relayed)."""
    while turn["state"] == "running" and batches != 0:
        r = await _step(
            client, headers, turn, relay(link, [bytes.fromhex(c) for c in turn["commands"]])
        )
        assert r.status_code == 200, r.text
        turn = r.json()
        batches = None if batches is None else batches - 1
    return turn


async def _application(
    client: httpx.AsyncClient,
    operator: dict[str, str],
    supervisor: dict[str, str],
    name: str,
    order: str = "123",
) -> tuple[int, str]:
    _, application, card_no = await register_and_apply(
        client, operator, supervisor, resident_id=resident_id(order=order), name=name
    )
    return application, card_no


async def test_personalize_over_the_api(
    client: httpx.AsyncClient,
    operator: dict[str, str],
    supervisor: dict[str, str],
    connect: Connect,
) -> None:
    application, card_no = await _application(client, operator, supervisor, "王小明")
    card = make_blank_card(CHIP)
    with connect(card) as link:
        r = await _start(client, operator, application, link.atr())
        assert r.status_code == 200, r.text
        turn = r.json()
        assert (turn["state"], turn["seq"], turn["step"], turn["resumed"]) == (
            "running",
            1,
            0,
            False,
        )
        assert turn["commands"] == ["0084000008"]  # the first batch asks for the challenge
        assert turn["chip_serial"] == CHIP.hex().upper()
        turn = await _drive(client, operator, link, turn)
        snapshot = read_card(link)
    assert turn["state"] == "done", turn
    assert turn["step"] == turn["steps"]
    assert turn["card_no"] == snapshot.card_no == card_no
    assert files.decode_text(snapshot.ef0016[2:22], "gbk") == "王小明"
    assert card.state.transport_key is None
    assert len(card.state.keys) == 7
    r = await client.get(f"/api/v1/applications/{application}", headers=operator)
    assert r.json()["status"] == "personalized"
    r = await client.post(f"/api/v1/applications/{application}/handover", headers=operator)
    assert r.status_code == 200, r.text


async def test_start_from_approved_allocates_the_card(
    client: httpx.AsyncClient, operator: dict[str, str], supervisor: dict[str, str]
) -> None:
    r = await client.post(
        "/api/v1/residents",
        json={"resident_id": resident_id(), "name": "李雷", "phone": "13800000000", "address": "x"},
        headers=operator,
    )
    r = await client.post(
        "/api/v1/applications", json={"resident_id": r.json()["id"]}, headers=operator
    )
    application = r.json()["id"]
    assert (await _start(client, operator, application, CHIP)).status_code == 409  # submitted
    await client.post(f"/api/v1/applications/{application}/approve", headers=supervisor)
    with InProcessLink(make_blank_card(CHIP)) as link:
        r = await _start(client, operator, application, link.atr())
        assert r.status_code == 200, r.text
        turn = await _drive(client, operator, link, r.json())
    assert turn["state"] == "done"
    r = await client.get(f"/api/v1/applications/{application}", headers=operator)
    assert r.json()["status"] == "personalized"
    assert r.json()["card_no"] == turn["card_no"]


async def test_steps_are_idempotent_and_ordered(
    client: httpx.AsyncClient, operator: dict[str, str], supervisor: dict[str, str]
) -> None:
    application, _ = await _application(client, operator, supervisor, "韩梅梅")
    with InProcessLink(make_blank_card(CHIP)) as link:
        turn = (await _start(client, operator, application, link.atr())).json()
        turn = await _drive(client, operator, link, turn, batches=3)
        responses = relay(link, [bytes.fromhex(c) for c in turn["commands"]])
        first = await _step(client, operator, turn, responses)
        assert first.status_code == 200, first.text
        # The answer was lost on the way: the same responses again get the same batch, and
        # nothing is asked of the card twice.
        again = await _step(client, operator, turn, responses)
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        # Other responses to a batch already answered, or a batch not out, are refused.
        other = [bytes(8) + b"\x90\x00"]
        r = await _step(client, operator, turn, other)
        assert (r.status_code, r.json()["error"]) == (409, "StepOutOfOrder")
        r = await _step(client, operator, {**first.json(), "seq": first.json()["seq"] + 1}, other)
        assert (r.status_code, r.json()["error"]) == (409, "StepOutOfOrder")
        # More responses than commands, or responses after a refusal, are malformed.
        next_turn = first.json()
        n = len(next_turn["commands"])
        r = await _step(client, operator, next_turn, [b"\x90\x00"] * (n + 1))
        assert r.status_code == 422, r.text
        if n > 1:
            r = await _step(client, operator, next_turn, [b"\x69\x88"] + [b"\x90\x00"] * (n - 1))
            assert r.status_code == 422, r.text
        turn = await _drive(client, operator, link, next_turn)
    assert turn["state"] == "done"


class PulledCard(VirtualCard):
    """Answers ``budget`` APDUs, then behaves like a card pulled from the reader."""

    budget = 10_000

    def process(self, apdu: bytes) -> bytes:
        if self.budget <= 0:
            raise ConnectionError("card pulled out")
        self.budget -= 1
        return super().process(apdu)


@pytest.mark.parametrize("budget", [1, 9, 20, 26])
async def test_pulled_card_resumes_and_another_card_is_refused(
    client: httpx.AsyncClient,
    operator: dict[str, str],
    supervisor: dict[str, str],
    budget: int,
) -> None:
    application, card_no = await _application(client, operator, supervisor, "李四")
    card = PulledCard(make_blank_card(CHIP).state)
    card.budget = budget
    link = InProcessLink(card).__enter__()
    turn = (await _start(client, operator, application, link.atr())).json()
    with pytest.raises(Exception, match="removed"):
        await _drive(client, operator, link, turn)
    # Another card is refused while the session is bound to the first chip.
    r = await _start(client, operator, application, make_blank_card(OTHER_CHIP).atr)
    assert (r.status_code, r.json()["error"]) == (409, "OtherCardPresented")
    # The same card back in the reader resumes (the agent restarted: it only knows the application).
    card.budget = 10_000
    with InProcessLink(card) as link:
        r = await _start(client, operator, application, link.atr())
        assert r.status_code == 200, r.text
        assert r.json()["resumed"]
        turn = await _drive(client, operator, link, r.json())
        snapshot = read_card(link)
    assert turn["state"] == "done", turn
    assert snapshot.card_no == card_no


async def test_roles_chips_and_abandon(
    client: httpx.AsyncClient,
    operator: dict[str, str],
    supervisor: dict[str, str],
    auditor: dict[str, str],
) -> None:
    application, _ = await _application(client, operator, supervisor, "张三")
    second, _ = await _application(client, operator, supervisor, "赵六", "124")
    chip = make_blank_card(CHIP)
    assert (await _start(client, auditor, application, chip.atr)).status_code == 403
    assert (
        await client.post(SESSIONS, json={"application_id": application, "atr": chip.atr.hex()})
    ).status_code == 401
    r = await _start(client, operator, application, chip.atr)
    assert r.status_code == 200, r.text
    turn = r.json()
    r = await _step(client, auditor, turn, [b"\x90\x00"])
    assert r.status_code == 403
    # One chip, one unfinished session.
    r = await _start(client, operator, second, chip.atr)
    assert (r.status_code, r.json()["error"]) == (409, "ChipInUse")
    # Only a supervisor gives a chip up; then another card may be taken.
    r = await client.post(f"{SESSIONS}/{turn['session_id']}/abandon", headers=operator)
    assert r.status_code == 403
    r = await client.post(f"{SESSIONS}/{turn['session_id']}/abandon", headers=supervisor)
    assert (r.status_code, r.json()["state"]) == (200, "failed")
    r = await _step(client, operator, turn, [bytes(8) + b"\x90\x00"])
    assert r.status_code == 409
    with InProcessLink(make_blank_card(OTHER_CHIP)) as link:
        r = await _start(client, operator, application, link.atr())
        assert r.status_code == 200, r.text
        assert not r.json()["resumed"]
        assert (await _drive(client, operator, link, r.json()))["state"] == "done"
    # The first chip is free again, for the second application; a personalized chip is not.
    with InProcessLink(chip) as link:
        r = await _start(client, operator, second, link.atr())
        assert r.status_code == 200, r.text
        assert (await _drive(client, operator, link, r.json()))["state"] == "done"
    r = await client.post(f"{SESSIONS}/{turn['session_id']}/abandon", headers=supervisor)
    assert r.status_code == 409  # done
    assert (await client.post(f"{SESSIONS}/999999/abandon", headers=supervisor)).status_code == 404


async def test_a_personalized_card_is_not_blank(
    client: httpx.AsyncClient, operator: dict[str, str], supervisor: dict[str, str]
) -> None:
    """A chip whose transport key is gone (not bound to any card here) cannot be started."""
    application, _ = await _application(client, operator, supervisor, "钱七")
    blank = make_blank_card(CHIP)
    used = VirtualCard(dataclasses.replace(blank.state, transport_key=None))
    with InProcessLink(used) as link:
        turn = (await _start(client, operator, application, link.atr())).json()
        turn = await _drive(client, operator, link, turn)
    assert turn["state"] == "failed"
    assert "not a blank card" in turn["detail"]
    r = await _start(client, operator, application, used.atr)
    assert (r.status_code, r.json()["error"]) == (409, "SessionSpoiled")
