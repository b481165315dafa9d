"""A bus validator: flat fare per line, card-type concessions and a transfer discount read from
the card's bus compound record (reference/pboc.md §5; DESIGN §9).

Compound record, tag 01 (bus), SFI 17, 48 bytes: ``01 2E 00`` ‖ Line(2, BCD) ‖ Station(2, BCD)
‖ TermNo(6) ‖ DateTime(7, BCD, local) ‖ Amount(4) ‖ Fare(4) ‖ TransferFlag(1) ‖ zeros. The
record is written in the same DEBIT that takes the fare (CAPP purchase, tx type 09).

Fare: ``fares["bus:<line>"]["fare"]`` (else ``fares["bus:default"]``), times the card type's
``concessions[<type>]["percent"]`` / 100 rounded down, less ``transfer["bus"]["discount"]``
when the previous boarding on the card was on another line less than
``transfer["bus"]["window_minutes"]`` ago; never below zero.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cardsvc.reader.link import CardLink
from terminals.devices.validator import LOCAL_TZ, TapResult, Validator

BUS_TAG = 0x01


def bus_record(
    line: str, station: str, terminal_no: str, dt14: str, amount: int, fare: int, transfer: bool
) -> bytes:
    payload = (
        bytes.fromhex(line) + bytes.fromhex(station) + bytes.fromhex(terminal_no) + bytes.fromhex(dt14)
        + amount.to_bytes(4, "big") + fare.to_bytes(4, "big") + bytes((1 if transfer else 0,))
    )  # fmt: skip
    return bytes((BUS_TAG, 0x2E, 0x00)) + payload + bytes(45 - len(payload))


def parse_bus_record(record: bytes) -> tuple[str, datetime] | None:
    """(line, boarding time) of a bus compound record, or None when it was never written."""
    if len(record) < 20 or record[0] != BUS_TAG or record[3:5] == b"\x00\x00":
        return None
    try:
        when = datetime.strptime(record[13:20].hex(), "%Y%m%d%H%M%S").replace(tzinfo=LOCAL_TZ)
    except ValueError:
        return None
    return record[3:5].hex(), when


class BusValidator(Validator):
    category = "bus"

    def __init__(
        self, *args: Any, line: str = "0001", station: str = "0001", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if len(line) != 4 or not line.isdigit() or len(station) != 4 or not station.isdigit():
            raise ValueError("line and station are 4 digits")
        self.line = line
        self.station = station

    def fare_for(
        self, card_type: str, capp_records: list[bytes], now: datetime
    ) -> tuple[int, int, bool]:
        """(amount, fare before concession, transfer applied)."""
        base = self.param(
            "fares", f"bus:{self.line}", "fare", self.param("fares", "bus:default", "fare", 200)
        )
        amount = base * self.concession_percent(card_type) // 100
        transfer = False
        previous = next(
            (p for p in (parse_bus_record(r) for r in capp_records) if p is not None), None
        )
        if previous is not None:
            line, when = previous
            window = self.param("transfer", "bus", "window_minutes", 0)
            if line != self.line and 0 <= (now - when).total_seconds() <= window * 60:
                transfer = True
                amount = max(0, amount - self.param("transfer", "bus", "discount", 0))
        return amount, base, transfer

    def tap(self, link: CardLink, *, tear: bool = False) -> TapResult:
        now = self.clock().astimezone(LOCAL_TZ)
        dt14 = now.strftime("%Y%m%d%H%M%S")

        def amount_for(
            asn: str, card_type: str, capp_records: list[bytes]
        ) -> tuple[int, int, dict[str, Any] | None, bytes | None]:
            amount, fare, transfer = self.fare_for(card_type, capp_records, now)
            compound = {
                "line": self.line,
                "station": self.station,
                "direction": "board",
                "transfer": transfer,
            }
            record = bus_record(
                self.line, self.station, self.terminal_no, dt14, amount, fare, transfer
            )
            return amount, fare, compound, record

        return self.purchase(link, amount_for=amount_for, capp_tag=BUS_TAG, tear=tear)
