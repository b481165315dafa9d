"""Put a simulated chip into the vpcd virtual reader of pcscd (vsmartcard-vpcd).

vpcd (driver config ``/etc/reader.conf.d/vpcd``) listens on 127.0.0.1:35963 for reader slot 0
("Virtual PCD 00 00"; slot 1 on 35964) and waits for a virtual card to connect. Each message is
a 2-byte big-endian length and a payload; a 1-byte payload is a control byte (00 power off,
01 power on, 02 reset, 04 get ATR, answered with the ATR), a longer one is an APDU, answered
with response ‖ SW. Closing the socket is removing the card.

:class:`VpcdCard` runs one connection in a daemon thread. When the card signals a torn
transaction (:class:`~terminals.devices.apdu.CardTorn`) the connection is closed without an
answer, which pcscd sees as a removed card, and the card is reinserted after
``reinsert_delay`` seconds unless told otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from types import TracebackType
from typing import Final

from terminals.devices.apdu import CardTorn, SimulatedIcc

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 35963
POWER_OFF: Final = 0x00
POWER_ON: Final = 0x01
RESET: Final = 0x02
GET_ATR: Final = 0x04


class VpcdError(ConnectionError):
    """vpcd is not listening (pcscd not running, or the vpcd driver not installed)."""


def _quick_ack(sock: socket.socket) -> None:
    """Acknowledge at once. vpcd writes the 2-byte length and the APDU in two sends without
    TCP_NODELAY, so Nagle holds the APDU until our ACK; a delayed ACK (40 ms on Linux) would add
    that much to every APDU. Linux clears TCP_QUICKACK after use, so it is set after each read."""
    if hasattr(socket, "TCP_QUICKACK"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        _quick_ack(sock)
        chunk = sock.recv(n - len(buf))
        _quick_ack(sock)
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">H", len(payload)) + payload)


class VpcdCard:
    """Attach ``icc`` to a vpcd reader slot; ``stop()`` removes it."""

    def __init__(
        self,
        icc: SimulatedIcc,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        reinsert_delay: float | None = 0.3,
    ) -> None:
        self.icc = icc
        self.host = host
        self.port = port
        self.reinsert_delay = reinsert_delay
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.inserted = threading.Event()

    def start(self, timeout: float = 5.0) -> None:
        """Connect to vpcd (retrying until ``timeout``) and serve in a background thread."""
        sock = self._connect(timeout)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name="vpcd-card", daemon=True
        )
        self._thread.start()

    def _connect(self, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=2.0)
            except OSError as e:
                if time.monotonic() >= deadline:
                    raise VpcdError(f"vpcd not reachable at {self.host}:{self.port}: {e}") from e
                time.sleep(0.1)
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sock = sock
            self.inserted.set()
            return sock

    def _run(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            torn = self._serve(sock)
            self._close()
            if not torn or self.reinsert_delay is None or self._stop.wait(self.reinsert_delay):
                return
            try:
                sock = self._connect(timeout=5.0)
            except VpcdError:
                log.warning("vpcd went away; the virtual card stays out")
                return

    def _serve(self, sock: socket.socket) -> bool:
        """Answer vpcd until the connection ends; True when the card was torn."""
        try:
            while True:
                head = _recv_exact(sock, 2)
                if head is None:
                    return False
                (length,) = struct.unpack(">H", head)
                payload = _recv_exact(sock, length)
                if payload is None:
                    return False
                if length == 1:
                    ctrl = payload[0]
                    if ctrl == GET_ATR:
                        _send(sock, self.icc.atr)
                    elif ctrl in (POWER_ON, RESET):
                        self.icc.power_on()
                    elif ctrl == POWER_OFF:
                        self.icc.power_off()
                    continue
                try:
                    response = self.icc.process(payload)
                except CardTorn:
                    return True
                _send(sock, response)
        except OSError:
            return False

    def _close(self) -> None:
        self.inserted.clear()
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def stop(self) -> None:
        """Remove the card from the reader and end the thread."""
        self._stop.set()
        self._close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> VpcdCard:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
