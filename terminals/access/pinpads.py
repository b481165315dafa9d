"""The adapter of the PIN pads port (``cardsvc.pinpads``): a counter's PIN pad is a signed-in
terminal of kind ``counter``, and its PIN key is the one of its live session."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.hsm import PinKeyRef
from cardsvc.pinpads import PinPadUnavailable
from terminals.access import repository
from terminals.registry.models import TerminalKind


class SessionPinPads:
    async def counter_pin_key(self, session: AsyncSession, terminal_no: str) -> PinKeyRef:
        blob = await repository.live_pin_key(
            session, terminal_no, TerminalKind.counter, clock.now()
        )
        if blob is None:
            raise PinPadUnavailable(
                f"terminal {terminal_no} is not an active counter terminal with a live session: "
                "sign its PIN pad in"
            )
        return PinKeyRef(blob)
