"""PC/SC through pyscard: the only module that imports ``smartcard``.

pyscard is untyped; every value it returns is converted here (``int``, ``str``, ``bytes``) so
nothing untyped leaves this module. Connections are exclusive (``SCARD_SHARE_EXCLUSIVE``): a
counter PC must not let another program talk to the card mid-personalization.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Self

from smartcard import scard

from cardsvc.reader.errors import CardError, CardRemoved, NoCard, ReaderBusy, ReaderUnavailable
from cardsvc.reader.link import transmit_t0

_REMOVED = {
    int(scard.SCARD_W_REMOVED_CARD),
    int(scard.SCARD_E_NO_SMARTCARD),
    int(scard.SCARD_W_RESET_CARD),
    int(scard.SCARD_W_UNPOWERED_CARD),
    int(scard.SCARD_W_UNRESPONSIVE_CARD),
    int(scard.SCARD_E_READER_UNAVAILABLE),
    int(scard.SCARD_E_NOT_TRANSACTED),  # the chip stopped answering mid-command
}
_NO_SERVICE = {
    int(scard.SCARD_E_NO_SERVICE),
    int(scard.SCARD_E_SERVICE_STOPPED),
    int(scard.SCARD_E_NO_READERS_AVAILABLE),
    int(scard.SCARD_E_UNKNOWN_READER),
}


def _message(hresult: int) -> str:
    return f"{scard.SCardGetErrorMessage(hresult)!s} (0x{hresult & 0xFFFFFFFF:08X})"


def _check(hresult: object, what: str) -> None:
    code = int(hresult)  # type: ignore[call-overload]
    if code == scard.SCARD_S_SUCCESS:
        return
    if code in _REMOVED:
        raise CardRemoved(f"{what}: {_message(code)}")
    if code == scard.SCARD_E_SHARING_VIOLATION:
        raise ReaderBusy(f"{what}: another program holds the card")
    if code in _NO_SERVICE:
        raise ReaderUnavailable(f"{what}: {_message(code)}")
    raise CardError(f"{what}: {_message(code)}")


class _Context:
    def __init__(self) -> None:
        hresult, hcontext = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        _check(hresult, "establish PC/SC context")
        self.handle: object = hcontext

    def release(self) -> None:
        scard.SCardReleaseContext(self.handle)

    def readers(self) -> list[str]:
        hresult, names = scard.SCardListReaders(self.handle, [])
        if int(hresult) == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        _check(hresult, "list readers")
        return [str(n) for n in names]


def list_readers() -> list[str]:
    """Reader names known to pcscd (empty when none); ReaderUnavailable when pcscd is down."""
    ctx = _Context()
    try:
        return ctx.readers()
    finally:
        ctx.release()


def _pick(names: list[str], reader: str | None) -> str:
    if reader is None:
        if not names:
            raise ReaderUnavailable("no PC/SC reader")
        return names[0]
    for name in names:
        if name == reader:
            return name
    for name in names:
        if name.startswith(reader):
            return name
    raise ReaderUnavailable(f"no reader named {reader!r} (have {names})")


def _wait(reader: str | None, timeout: float, *, present: bool) -> str:
    ctx = _Context()
    try:
        deadline = time.monotonic() + timeout
        name = _pick(ctx.readers(), reader)
        state = int(scard.SCARD_STATE_UNAWARE)
        while True:
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            hresult, states = scard.SCardGetStatusChange(ctx.handle, left_ms, [(name, state)])
            if int(hresult) != scard.SCARD_E_TIMEOUT:
                _check(hresult, "wait for card")
                event = int(states[0][1])
                has_card = (
                    bool(event & scard.SCARD_STATE_PRESENT) and not event & scard.SCARD_STATE_MUTE
                )
                if has_card == present:
                    return name
                state = event & ~int(scard.SCARD_STATE_CHANGED)
            if time.monotonic() >= deadline:
                if present:
                    raise NoCard(f"no card in {name!r} after {timeout:g} s")
                raise CardError(f"card still in {name!r} after {timeout:g} s")
    finally:
        ctx.release()


def wait_for_card(reader: str | None = None, timeout: float = 10.0) -> str:
    """Wait until a card is present in ``reader`` (default: the first); return the reader name."""
    return _wait(reader, timeout, present=True)


def wait_for_removal(reader: str | None = None, timeout: float = 10.0) -> str:
    """Wait until ``reader`` is empty (the holder took the card)."""
    return _wait(reader, timeout, present=False)


class PcscLink:
    """An exclusive PC/SC connection to the card in one reader (a :class:`CardLink`)."""

    def __init__(self, reader: str | None = None, *, wait: float = 0.0) -> None:
        self.reader = reader
        self.wait = wait
        self._ctx: _Context | None = None
        self._card: object = None
        self._protocol: int = 0
        self.reader_name = ""

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        name = (
            wait_for_card(self.reader, self.wait)
            if self.wait > 0
            else _pick(list_readers(), self.reader)
        )
        ctx = _Context()
        try:
            hresult, hcard, protocol = scard.SCardConnect(
                ctx.handle,
                name,
                scard.SCARD_SHARE_EXCLUSIVE,
                scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
            )
            _check(hresult, f"connect to {name!r}")
        except BaseException:
            ctx.release()
            raise
        self._ctx, self._card, self._protocol, self.reader_name = ctx, hcard, int(protocol), name

    def close(self) -> None:
        if self._card is not None:
            scard.SCardDisconnect(self._card, scard.SCARD_LEAVE_CARD)
            self._card = None
        if self._ctx is not None:
            self._ctx.release()
            self._ctx = None

    def atr(self) -> bytes:
        if self._card is None:
            raise CardRemoved("not connected")
        hresult, _reader, _state, _protocol, atr = scard.SCardStatus(self._card)
        _check(hresult, "card status")
        return bytes(int(b) for b in atr)

    def _raw(self, apdu: bytes) -> bytes:
        if self._card is None:
            raise CardRemoved("not connected")
        hresult, response = scard.SCardTransmit(self._card, self._protocol, list(apdu))
        try:
            _check(hresult, "transmit")
            if len(response) < 2:
                # vpcd answers an empty response when the chip went away mid-command.
                raise CardRemoved("card answered without a status word")
        except CardRemoved:
            # Release the exclusive handle so the card can be connected again when it returns.
            self.close()
            raise
        return bytes(int(b) for b in response)

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        return transmit_t0(self._raw, apdu)
