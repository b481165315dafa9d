"""Purse block and unblock with secure messaging (docs/counter-agent.md §3): the server answers the
card's challenge with the command, its MAC made by the HSM under the card's DAMK."""

from __future__ import annotations

import httpx

from cardsvc.reader.link import CardLink, InProcessLink, command
from terminals.devices.card import Lock, VirtualCard, make_blank_card
from tests.factories import resident_id
from tests.issuance.flow import personalize_over_api, register_and_apply

CHIP = bytes.fromhex("B10C000000000001")
SELECT_PURSE = bytes.fromhex("00A4040009A00000000386980701")


async def _lock_command(
    client: httpx.AsyncClient, headers: dict[str, str], link: CardLink, card_no: str, action: str
) -> httpx.Response:
    link.transmit(SELECT_PURSE)
    challenge = command(link, bytes.fromhex("0084000004"))
    return await client.post(
        f"/api/v1/cards/{card_no}/purse-lock",
        json={"action": action, "chip_serial": link.atr()[-8:].hex(), "challenge": challenge.hex()},
        headers=headers,
    )


def _lock(card: VirtualCard) -> Lock:
    return card.state.lock


async def test_block_and_unblock_the_purse(
    client: httpx.AsyncClient,
    operator: dict[str, str],
    supervisor: dict[str, str],
    auditor: dict[str, str],
) -> None:
    _, application, card_no = await register_and_apply(
        client, operator, supervisor, resident_id=resident_id(), name="孙九"
    )
    card = make_blank_card(CHIP)
    with InProcessLink(card) as link:
        assert (await personalize_over_api(client, operator, link, application))["state"] == "done"
        r = await client.post(f"/api/v1/applications/{application}/handover", headers=operator)
        assert r.status_code == 200, r.text
        # An active card's purse is not blocked; an auditor asks for nothing.
        r = await _lock_command(client, operator, link, card_no, "block")
        assert (r.status_code, r.json()["error"]) == (409, "InvalidStateTransition")
        r = await _lock_command(client, auditor, link, card_no, "block")
        assert r.status_code == 403
        assert (await client.post(f"/api/v1/cards/{card_no}/freeze", headers=supervisor)).is_success
        r = await _lock_command(client, operator, link, card_no, "block")
        assert r.status_code == 200, r.text
        assert r.json()["command"].startswith("841E000004")
        command(link, bytes.fromhex(r.json()["command"]))
        assert _lock(card) is Lock.TEMPORARY
        assert link.transmit(SELECT_PURSE)[1] == 0x6A81
        # The MAC is bound to the challenge: the same command again is refused by the card.
        link.transmit(bytes.fromhex("0084000004"))
        assert link.transmit(bytes.fromhex(r.json()["command"]))[1] == 0x6988
        r = await _lock_command(client, operator, link, card_no, "unblock")
        assert (r.status_code, r.json()["error"]) == (409, "InvalidStateTransition")
        assert (
            await client.post(f"/api/v1/cards/{card_no}/unfreeze", headers=supervisor)
        ).is_success
        r = await _lock_command(client, operator, link, card_no, "unblock")
        assert r.status_code == 200, r.text
        command(link, bytes.fromhex(r.json()["command"]))
        assert _lock(card) is Lock.NONE
    # Another chip than the card's is refused.
    with InProcessLink(make_blank_card(bytes.fromhex("B10C000000000002"))) as other:
        r = await _lock_command(client, operator, other, card_no, "unblock")
    assert (r.status_code, r.json()["error"]) == (409, "WrongCard")
    r = await client.post(
        f"/api/v1/cards/{card_no}/purse-lock",
        json={"action": "update", "chip_serial": CHIP.hex(), "challenge": "00000000"},
        headers=operator,
    )
    assert r.status_code == 422
