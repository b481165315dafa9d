"""The PIN pads port: the key under which a service counter's PIN pad encrypted a PIN block.

A counter's PIN pad is a terminal of kind ``counter`` (its own TMK); it signs in like every
terminal and receives a PIN key of its session (docs/terminal-protocol.md §4). Counter operations
that take a PIN (setting it, a withdrawal) name that terminal, and the core asks this port for the
key of its live session. Terminal sessions belong to ``terminals``, which the core never imports:
the API's composition root (``cardsvc/app.py``) hands the adapter to the app
(``app.state.pin_pads``), and :mod:`cardsvc.deps` gives it to the endpoints.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.errors import Conflict
from cardsvc.hsm import PinKeyRef


class PinPadUnavailable(Conflict):
    """The named PIN pad is not a counter terminal with a live session: sign it in first."""


class PinPads(Protocol):
    async def counter_pin_key(self, session: AsyncSession, terminal_no: str) -> PinKeyRef:
        """The PIN key of the live session of counter terminal ``terminal_no``; raises
        :class:`PinPadUnavailable` when there is none."""
        ...
