"""A fuel pump paying from the card holder's online account: pre-authorization before the
nozzle is lifted, completion with the amount dispensed (DESIGN §9 online authorization).

The pump reads the card's ASN (EF 0015, reference/pboc.md §6.2) through any CardLink and talks to
the host with HostClient: ``POST /api/v1/online/preauth`` → dispense → ``/completion``. An
answer lost in transit is retried with the same terminal serial (the host answers it again); a
pre-authorization the pump gives up on is reversed (``/reversal``), so no hold is left behind.
"""

from __future__ import annotations

from typing import Any

from cardsvc.reader.link import CardLink
from cardsvc.reader.purse import read_binary_sfi, select_purse
from terminals.devices.host_client import Authorization, HostClient

__all__ = ["Authorization", "FuelPump", "fuel_amount"]


def fuel_amount(millilitres: int, price_per_litre: int) -> int:
    """Fen for the volume dispensed, rounded half up (the price is fen per litre)."""
    return (millilitres * price_per_litre + 500) // 1000


class FuelPump:
    def __init__(
        self, host: HostClient, *, price_per_litre: int = 780, first_serial: int = 1
    ) -> None:
        self.host = host
        self.price_per_litre = price_per_litre
        self._serial = first_serial - 1

    def next_serial(self) -> int:
        self._serial += 1
        return self._serial

    @staticmethod
    def read_asn(link: CardLink) -> str:
        select_purse(link)
        return read_binary_sfi(link, 0x15)[12:20].hex().upper()

    async def _send(
        self, message: str, payload: dict[str, Any], pin: str | None = None
    ) -> Authorization:
        return await self.host.online(message, payload, pin=pin)

    async def preauthorize(
        self, link: CardLink, max_amount: int, *, pin: str | None = None
    ) -> Authorization:
        """Reserve ``max_amount`` fen on the card holder's account before fuelling, with the PIN
        the holder typed on the pump's PIN pad."""
        asn = self.read_asn(link)
        return await self._send(
            "preauth",
            {"terminal_serial": self.next_serial(), "asn": asn, "amount": max_amount},
            pin,
        )

    async def complete(self, preauth: Authorization, millilitres: int) -> Authorization:
        """Charge what was dispensed (≤ the pre-authorization); the rest of the hold is released."""
        amount = fuel_amount(millilitres, self.price_per_litre)
        if amount == 0:
            return await self.reverse(preauth.terminal_serial)
        return await self._send(
            "completion",
            {
                "terminal_serial": self.next_serial(),
                "original_serial": preauth.terminal_serial,
                "amount": amount,
            },
        )

    async def reverse(self, original_serial: int) -> Authorization:
        return await self._send(
            "reversal", {"terminal_serial": self.next_serial(), "original_serial": original_serial}
        )

    async def fuel(
        self, link: CardLink, *, max_amount: int, millilitres: int, pin: str | None = None
    ) -> tuple[Authorization, Authorization | None]:
        """One fill: pre-authorization, then the completion for the volume (None if declined)."""
        preauth = await self.preauthorize(link, max_amount, pin=pin)
        if not preauth.approved:
            return preauth, None
        return preauth, await self.complete(preauth, millilitres)
