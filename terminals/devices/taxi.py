"""A taxi meter: the fare from the trip (flag fall, distance, waiting), a plain EP purchase
(tx type 06) at the end of the trip (reference/pboc.md §3).

Tariff ``fares["taxi"]``: ``flag_fall`` (fen, covers ``included_m`` metres), ``per_km`` (fen
per started kilometre beyond), ``waiting_per_min``; the card type's concession applies too.
"""

from __future__ import annotations

from typing import Any

from cardsvc.reader.link import CardLink
from terminals.devices.validator import TapResult, Validator


class TaxiMeter(Validator):
    category = "taxi"

    def trip_fare(self, distance_m: int, waiting_min: int = 0) -> int:
        flag_fall = self.param("fares", "taxi", "flag_fall", 1000)
        included = self.param("fares", "taxi", "included_m", 3000)
        per_km = self.param("fares", "taxi", "per_km", 200)
        beyond = max(0, distance_m - included)
        started_km = -(-beyond // 1000)
        return (
            flag_fall
            + started_km * per_km
            + waiting_min * self.param("fares", "taxi", "waiting_per_min", 0)
        )

    def pay(
        self, link: CardLink, *, distance_m: int, waiting_min: int = 0, tear: bool = False
    ) -> TapResult:
        fare = self.trip_fare(distance_m, waiting_min)

        def amount_for(
            asn: str, card_type: str, capp_records: list[bytes]
        ) -> tuple[int, int, dict[str, Any] | None, bytes | None]:
            return fare * self.concession_percent(card_type) // 100, fare, None, None

        return self.purchase(link, amount_for=amount_for, capp_tag=None, tear=tear)
