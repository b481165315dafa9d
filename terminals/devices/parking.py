"""A parking terminal: entry and exit taps on the purse with a compound (CAPP) record, the fee
by the time parked (reference/pboc.md §5; DESIGN §9).

Entry is a CAPP purchase of amount 0 that writes the parking record; exit reads it, computes the
fee from the entry time, and takes the fee in a CAPP purchase that rewrites the record as exited.
Both are offline records (tx type 09) uploaded in batches like a bus validator's.

Compound record, tag 04 (parking), SFI 17, 48 bytes (``80DC 04 B8``, P2 = SFI 17 << 3):
``04 2E 00`` ‖ Lot(2, BCD) ‖ State(1: 01 parked, 02 left) ‖ TermNo(6) ‖ EntryTime(7, BCD, local)
‖ ExitTime(7, BCD, local; zeros while parked) ‖ Amount(4) ‖ zeros.

Tariff (parameters table ``fares``, key ``parking:<lot>``, else ``parking:default``): the first
``free_minutes`` are free; then ``hourly`` fen per started hour, at most ``daily_cap`` per started
24 hours. An exit without an entry record pays ``lost_ticket``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from cardsvc.reader.link import CardLink
from cardsvc.reader.purse import read_binary_sfi, select_purse
from terminals.devices.host_client import Authorization
from terminals.devices.validator import LOCAL_TZ, TapRefused, TapResult, Validator

PARKING_TAG = 0x04
STATE_PARKED = 0x01
STATE_LEFT = 0x02

DEFAULT_TARIFF = {"free_minutes": 15, "hourly": 500, "daily_cap": 4_000, "lost_ticket": 6_000}


def parking_record(
    lot: str, state: int, terminal_no: str, entered: str, left: str | None, amount: int
) -> bytes:
    payload = (
        bytes.fromhex(lot) + bytes((state,)) + bytes.fromhex(terminal_no) + bytes.fromhex(entered)
        + (bytes.fromhex(left) if left else bytes(7)) + amount.to_bytes(4, "big")
    )  # fmt: skip
    return bytes((PARKING_TAG, 0x2E, 0x00)) + payload + bytes(45 - len(payload))


def parse_parking_record(record: bytes) -> tuple[str, int, datetime] | None:
    """(lot, state, entry time) of a parking record, or None when it was never written."""
    if len(record) < 20 or record[0] != PARKING_TAG or record[5] not in (STATE_PARKED, STATE_LEFT):
        return None
    try:
        entered = datetime.strptime(record[12:19].hex(), "%Y%m%d%H%M%S").replace(tzinfo=LOCAL_TZ)
    except ValueError:
        return None
    return record[3:5].hex(), record[5], entered


def parking_fee(
    entered: datetime, left: datetime, *, free_minutes: int, hourly: int, daily_cap: int
) -> int:
    """The fee in fen for a stay from ``entered`` to ``left``."""
    minutes = max(0.0, (left - entered).total_seconds() / 60)
    if minutes <= free_minutes:
        return 0
    days, rest = divmod(minutes, 24 * 60)
    fee = int(days) * daily_cap
    if rest > 0:
        fee += min(daily_cap, math.ceil(rest / 60) * hourly)
    return fee


class ParkingTerminal(Validator):
    category = "parking"

    def __init__(self, *args: Any, lot: str = "0001", gate: str = "entry", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if len(lot) != 4 or not lot.isdigit():
            raise ValueError("lot is 4 digits")
        if gate not in ("entry", "exit"):
            raise ValueError("gate is entry or exit")
        self.lot = lot
        self.gate = gate

    def tariff(self, name: str) -> int:
        default = self.param("fares", "parking:default", name, DEFAULT_TARIFF[name])
        return self.param("fares", f"parking:{self.lot}", name, default)

    def tap(self, link: CardLink, *, tear: bool = False) -> TapResult:
        now = self.clock().astimezone(LOCAL_TZ)
        dt14 = now.strftime("%Y%m%d%H%M%S")

        def amount_for(
            asn: str, card_type: str, capp_records: list[bytes]
        ) -> tuple[int, int, dict[str, Any] | None, bytes | None]:
            stay = next(
                (
                    p
                    for p in (parse_parking_record(r) for r in capp_records)
                    if p is not None and p[0] == self.lot
                ),
                None,
            )
            if self.gate == "entry":
                if stay is not None and stay[1] == STATE_PARKED:
                    raise TapRefused("card already entered this lot")
                record = parking_record(self.lot, STATE_PARKED, self.terminal_no, dt14, None, 0)
                return 0, 0, {"station": self.lot, "direction": "entry"}, record
            if stay is None or stay[1] != STATE_PARKED:
                fee = self.tariff("lost_ticket")
                entered14 = dt14
            else:
                entered = stay[2]
                entered14 = entered.strftime("%Y%m%d%H%M%S")
                fee = parking_fee(
                    entered, now, free_minutes=self.tariff("free_minutes"),
                    hourly=self.tariff("hourly"), daily_cap=self.tariff("daily_cap"),
                )  # fmt: skip
            record = parking_record(self.lot, STATE_LEFT, self.terminal_no, entered14, dt14, fee)
            compound = {"station": self.lot, "direction": "exit", "entry_time": entered14}
            return fee, fee, compound, record

        return self.purchase(link, amount_for=amount_for, capp_tag=PARKING_TAG, tear=tear)

    async def pay_from_account(
        self, link: CardLink, amount: int, *, pin: str | None, terminal_serial: int
    ) -> Authorization:
        """Take a fee from the card holder's online account instead of the purse (a stay the
        purse cannot cover, a monthly permit): an online purchase with the PIN the holder typed
        on the gate's PIN pad (docs/terminal-protocol.md §9.2, §10)."""
        select_purse(link)
        asn = read_binary_sfi(link, 0x15)[12:20].hex().upper()
        return await self.host.online(
            "purchase", {"terminal_serial": terminal_serial, "asn": asn, "amount": amount}, pin=pin
        )
