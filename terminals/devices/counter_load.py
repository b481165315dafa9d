"""A counter (or kiosk) loading a card's purse online (圈存) through the reader adapter.

It drives any :class:`~cardsvc.reader.link.CardLink` (pcscd through pyscard, or the in-process
link) and talks to the host with :class:`~terminals.devices.host_client.HostClient`:

1. SELECT the purse, read the ASN from EF 0015 (reference/pboc.md §6.2);
2. INITIALIZE FOR LOAD ``80 50 00 02 0B`` KeyIdx Amount TermNo → Balance OnlineCtr KeyVer
   AlgId Random MAC1 (§4);
3. ``POST /api/v1/loads`` with that answer → MAC2 and the host date-time;
4. CREDIT FOR LOAD ``80 52 00 00 0B`` HostDate HostTime MAC2 → TAC;
5. ``POST /api/v1/loads/confirm`` with the TAC.

A card pulled out during CREDIT leaves the load torn: the terminal keeps what it needs and, on the
card's next tap, asks for GET TRANSACTION PROVE ``80 5A 00 02 02`` (counter + 1) (§6.4) and sends
the proof to ``POST /api/v1/loads/prove``. Each step is a method, so tests can stop between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cardsvc.reader.errors import CardRemoved, ProofUnavailable
from cardsvc.reader.link import CardLink, command
from cardsvc.reader.purse import read_binary_sfi, select_purse
from terminals.devices.host_client import HostClient, HostError

LOADS_PATH = "/api/v1/loads"
REVERSAL_PATH = "/api/v1/online/reversal"
KEY_INDEX = 0x01
TX_TYPE_EP_LOAD = 0x02


@dataclass(frozen=True, slots=True)
class LoadInit:
    """The card's INITIALIZE FOR LOAD answer (reference/pboc.md §4)."""

    asn: str
    amount: int
    balance: int
    online_counter: int
    key_version: int
    algorithm: int
    random: bytes
    mac1: bytes


@dataclass(frozen=True, slots=True)
class LoadAuthorization:
    terminal_serial: int
    response_code: str
    approved: bool
    load_id: int
    mac2: bytes | None
    host_datetime: str | None


@dataclass(frozen=True, slots=True)
class TornLoad:
    """What the terminal remembers of a load whose CREDIT got no answer."""

    asn: str
    terminal_serial: int
    online_counter: int  # before the load


@dataclass(frozen=True, slots=True)
class LoadResult:
    response_code: str
    load_id: int | None
    status: str  # declined | confirmed | pending (torn or unconfirmed)
    balance_after: int | None = None
    tac: bytes | None = None
    torn: TornLoad | None = None


def _json(response: Any) -> dict[str, Any]:
    if response.status_code != 200:
        raise HostError(response.status_code, response.text)
    body: dict[str, Any] = response.json()
    return body


class CounterLoadTerminal:
    """One counter terminal: its host connection and its own serial numbers."""

    def __init__(self, host: HostClient, *, first_serial: int = 1) -> None:
        self.host = host
        self.terminal_no = host.terminal_no
        self._serial = first_serial - 1

    def next_serial(self) -> int:
        self._serial += 1
        return self._serial

    # --- card steps ----------------------------------------------------------------------

    def initialize(self, link: CardLink, amount: int) -> LoadInit:
        select_purse(link)
        asn = read_binary_sfi(link, 0x15)[12:20].hex().upper()
        data = command(
            link,
            bytes.fromhex("805000020B") + bytes((KEY_INDEX,)) + amount.to_bytes(4, "big")
            + bytes.fromhex(self.terminal_no) + b"\x10",
            "initialize for load",
        )  # fmt: skip
        return LoadInit(
            asn=asn,
            amount=amount,
            balance=int.from_bytes(data[0:4], "big"),
            online_counter=int.from_bytes(data[4:6], "big"),
            key_version=data[6],
            algorithm=data[7],
            random=data[8:12],
            mac1=data[12:16],
        )

    @staticmethod
    def credit(link: CardLink, auth: LoadAuthorization) -> bytes:
        """CREDIT FOR LOAD; returns the TAC. Raises CardRemoved when the card is torn away."""
        if auth.mac2 is None or auth.host_datetime is None:
            raise ValueError("the load was not approved")
        dt = bytes.fromhex(auth.host_datetime)
        return command(
            link, bytes.fromhex("805200000B") + dt + auth.mac2 + b"\x04", "credit for load"
        )

    @staticmethod
    def prove(link: CardLink, online_counter_after: int) -> bytes | None:
        """GET TRANSACTION PROVE for a load (type 02); the TAC, or None (9406: no such proof)."""
        select_purse(link)
        try:
            data = command(
                link,
                bytes.fromhex("805A000202") + online_counter_after.to_bytes(2, "big") + b"\x08",
                "prove",
            )
        except ProofUnavailable:
            return None
        return data[4:8]  # MAC (00000000 for a load) ‖ TAC

    # --- host steps ----------------------------------------------------------------------

    async def authorize(
        self,
        init: LoadInit,
        *,
        source: str,
        terminal_serial: int | None = None,
        pin: str | None = None,
    ) -> LoadAuthorization:
        """The host's authorization of the load; ``pin``: the holder typed it on the PIN pad (a
        load from the online account needs it, docs/terminal-protocol.md §9.6, §10)."""
        serial = terminal_serial if terminal_serial is not None else self.next_serial()
        pin_field = {} if pin is None else {"pin_block": self.host.pin_block(pin, init.asn)}
        body = _json(
            await self.host.post(
                LOADS_PATH,
                pin_field
                | {
                    "terminal_serial": serial,
                    "terminal_no": self.terminal_no,
                    "asn": init.asn,
                    "amount": init.amount,
                    "source": source,
                    "balance": init.balance,
                    "online_counter": init.online_counter,
                    "key_version": init.key_version,
                    "algorithm": init.algorithm,
                    "random": init.random.hex().upper(),
                    "mac1": init.mac1.hex().upper(),
                },
            )
        )
        return LoadAuthorization(
            terminal_serial=serial,
            response_code=body["response_code"],
            approved=bool(body["approved"]),
            load_id=int(body["load_id"]),
            mac2=bytes.fromhex(body["mac2"]) if body.get("mac2") else None,
            host_datetime=body.get("host_datetime"),
        )

    async def confirm(self, terminal_serial: int, tac: bytes) -> dict[str, Any]:
        return _json(
            await self.host.post(
                f"{LOADS_PATH}/confirm",
                {"terminal_serial": terminal_serial, "tac": tac.hex().upper()},
            )
        )

    async def transfer_waiting(self, asn: str) -> int:
        """Fen of the replaced card's balance the host holds for this card."""
        body = _json(await self.host.get(f"{LOADS_PATH}/transfer?asn={asn}"))
        return int(body["amount"])

    async def send_proof(self, asn: str, online_counter_after: int, tac: bytes) -> dict[str, Any]:
        return _json(
            await self.host.post(
                f"{LOADS_PATH}/prove",
                {"asn": asn, "online_counter": online_counter_after, "tac": tac.hex().upper()},
            )
        )

    async def reverse(self, original_serial: int) -> dict[str, Any]:
        """Reverse the load ``original_serial`` (an online reversal: one serial space). Sent when
        the authorization got no answer, or CREDIT FOR LOAD was never sent or did not reach the
        card (GET TRANSACTION PROVE answers 9406)."""
        return _json(
            await self.host.post(
                REVERSAL_PATH,
                {"terminal_serial": self.next_serial(), "original_serial": original_serial},
            )
        )

    # --- the whole transaction -----------------------------------------------------------

    async def load(
        self, link: CardLink, amount: int, *, source: str = "cash", pin: str | None = None
    ) -> LoadResult:
        """Load ``amount`` fen onto the card in ``link`` (opened by the caller)."""
        init = self.initialize(link, amount)
        auth = await self.authorize(init, source=source, pin=pin)
        if not auth.approved:
            return LoadResult(auth.response_code, auth.load_id, "declined")
        try:
            tac = self.credit(link, auth)
        except CardRemoved:
            torn = TornLoad(init.asn, auth.terminal_serial, init.online_counter)
            return LoadResult(auth.response_code, auth.load_id, "pending", torn=torn)
        answer = await self.confirm(auth.terminal_serial, tac)
        return LoadResult(
            auth.response_code,
            auth.load_id,
            str(answer["status"]),
            balance_after=init.balance + amount,
            tac=tac,
        )

    async def load_transfer(self, link: CardLink) -> LoadResult | None:
        """Load what the card's predecessor held onto it; None when nothing waits."""
        select_purse(link)
        asn = read_binary_sfi(link, 0x15)[12:20].hex().upper()
        amount = await self.transfer_waiting(asn)
        return await self.load(link, amount, source="transfer") if amount else None

    async def recover(self, link: CardLink, torn: TornLoad) -> dict[str, Any] | None:
        """On the card's next tap: prove the torn load to the host if the card has it.

        None when the card holds no proof of it (the load did not reach the card, or the card
        has transacted since); the host then settles it from the card's next load.
        """
        tac = self.prove(link, torn.online_counter + 1)
        if tac is None:
            return None
        return await self.send_proof(torn.asn, torn.online_counter + 1, tac)
