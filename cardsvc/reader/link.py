"""The card link every card-facing module uses, and the in-process link to a virtual card.

``CardLink.transmit`` returns (data, SW) after the T=0 conventions are dealt with: ``61xx``
is followed by GET RESPONSE ``00C0 0000 xx`` and ``6Cxx`` by the same command resent with
Le = xx (reference/pboc.md §8). :func:`command` turns a status word into a typed error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from cardsvc.reader.errors import CardRemoved, error_for_sw

MAX_CHAINED_RESPONSES = 16


@runtime_checkable
class CardLink(Protocol):
    def transmit(self, apdu: bytes) -> tuple[bytes, int]: ...

    def atr(self) -> bytes: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ApduProcessor(Protocol):
    """A chip in the same process (``terminals.devices.card.VirtualCard``, the PSAM)."""

    @property
    def atr(self) -> bytes: ...

    def process(self, apdu: bytes) -> bytes: ...

    def power_on(self) -> None: ...


def split_sw(response: bytes) -> tuple[bytes, int]:
    if len(response) < 2:
        raise CardRemoved("card answered without a status word")
    return response[:-2], (response[-2] << 8) | response[-1]


def transmit_t0(raw: Callable[[bytes], bytes], apdu: bytes) -> tuple[bytes, int]:
    """Send ``apdu`` through ``raw`` (bytes in, response ‖ SW out) with 61xx/6Cxx handling."""
    data, sw = split_sw(raw(apdu))
    if sw >> 8 == 0x6C and len(apdu) >= 4:
        # 6Cxx: wrong Le; resend the same header with Le = xx (ISO 7816-3 T=0).
        le = bytes((sw & 0xFF,))
        if len(apdu) <= 5:
            resend = apdu[:4] + le  # case 1/2
        elif len(apdu) == 5 + apdu[4]:
            resend = apdu + le  # case 3: add Le
        else:
            resend = apdu[:-1] + le  # case 4: replace Le
        data, sw = split_sw(raw(resend))
    collected = bytearray(data)
    for _ in range(MAX_CHAINED_RESPONSES):
        if sw >> 8 != 0x61:
            break
        data, sw = split_sw(raw(bytes((0x00, 0xC0, 0x00, 0x00, sw & 0xFF))))
        if sw >> 8 == 0x6C:
            data, sw = split_sw(raw(bytes((0x00, 0xC0, 0x00, 0x00, sw & 0xFF))))
        collected += data
    return bytes(collected), sw


def command(link: CardLink, apdu: bytes, what: str = "") -> bytes:
    """Send one command; return its data on 9000, else raise the typed CardError."""
    data, sw = link.transmit(apdu)
    if sw != 0x9000:
        raise error_for_sw(sw, what)
    return data


class InProcessLink:
    """A link straight to a card object: the embedded default when no PC/SC reader exists.

    A card that signals a torn transaction (it raises a ``ConnectionError``) is reported as
    :class:`CardRemoved`, exactly as a PC/SC reader reports a card pulled out mid-command.
    """

    def __init__(self, card: ApduProcessor) -> None:
        self.card = card
        self._open = False

    def __enter__(self) -> Self:
        self.card.power_on()
        self._open = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False

    def atr(self) -> bytes:
        return self.card.atr

    def _raw(self, apdu: bytes) -> bytes:
        if not self._open:
            raise CardRemoved("link is not open")
        try:
            return self.card.process(apdu)
        except ConnectionError as e:
            self._open = False
            raise CardRemoved(f"card removed during the command: {e}") from e

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        return transmit_t0(self._raw, apdu)


@dataclass(frozen=True, slots=True)
class VirtualCards:
    """Opens a virtual card's state file as a link, for the commands that take ``--virtual-card``.

    The simulated chip is test and demo equipment outside ``cardsvc``: the CLI root passes this
    in as the click context object, so no ``cardsvc`` command imports the chip itself.
    """

    open: Callable[[Path], CardLink]
