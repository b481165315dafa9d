"""Relaying a batch of commands the server chose to the card (the counter agent's only job with
the card, and the development shortcut's)."""

from __future__ import annotations

from collections.abc import Sequence

from cardsvc.reader.link import CardLink


def relay(link: CardLink, commands: Sequence[bytes]) -> list[bytes]:
    """Send ``commands`` in order; each response is its data ‖ SW. Stops after the first status
    word other than 9000: what follows a refused command must not reach the card."""
    responses: list[bytes] = []
    for apdu in commands:
        data, sw = link.transmit(apdu)
        responses.append(data + sw.to_bytes(2, "big"))
        if sw != 0x9000:
            break
    return responses
