"""Field-device rules that need no host: the parking tariff, the parking record, fuel rounding."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from terminals.devices.fuel import fuel_amount
from terminals.devices.parking import (
    STATE_LEFT,
    STATE_PARKED,
    parking_fee,
    parking_record,
    parse_parking_record,
)
from terminals.devices.validator import LOCAL_TZ

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=LOCAL_TZ)
TARIFF = {"free_minutes": 15, "hourly": 500, "daily_cap": 4_000}


@pytest.mark.parametrize(
    ("stay", "fee"),
    [
        (timedelta(minutes=0), 0),
        (timedelta(minutes=15), 0),  # the free quarter hour
        (timedelta(minutes=16), 500),  # then every started hour, from the start
        (timedelta(minutes=60), 500),
        (timedelta(minutes=61), 1_000),
        (timedelta(hours=7, minutes=59), 4_000),  # 8 started hours, capped for the day
        (timedelta(hours=24), 4_000),
        (timedelta(hours=24, minutes=30), 4_500),  # a second day starts its own hours
        (timedelta(hours=49), 8_500),
    ],
)
def test_parking_fee(stay: timedelta, fee: int) -> None:
    assert parking_fee(T0, T0 + stay, **TARIFF) == fee


def test_parking_record_layout_round_trips() -> None:
    record = parking_record("0007", STATE_PARKED, "321100040001", "20260301080000", None, 0)
    assert len(record) == 48
    assert record[:3] == bytes.fromhex("042E00")  # tag 04, length 46, unlocked (reference §5.1)
    assert record[3:5] == bytes.fromhex("0007")
    assert parse_parking_record(record) == ("0007", STATE_PARKED, T0)
    left = parking_record(
        "0007", STATE_LEFT, "321100040001", "20260301080000", "20260301103000", 1_500
    )
    assert left[19:26] == bytes.fromhex("20260301103000")
    assert int.from_bytes(left[26:30], "big") == 1_500
    assert parse_parking_record(left) == ("0007", STATE_LEFT, T0)
    assert parse_parking_record(bytes.fromhex("042E00") + bytes(45)) is None  # never written


@pytest.mark.parametrize(
    ("ml", "price", "fen"), [(25_340, 780, 19_765), (1, 780, 1), (641, 780, 500), (0, 780, 0)]
)
def test_fuel_amount_rounds_half_up(ml: int, price: int, fen: int) -> None:
    assert fuel_amount(ml, price) == fen
