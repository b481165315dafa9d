"""The simulated biller's data set for the tests, and a small handle on its control routes."""

from __future__ import annotations

from typing import Any

from tests.loopback import local

WATER_KEY = bytes(range(32))
GAS_KEY = bytes(range(32, 64))
CHANNEL = "CITYCARD"


def bills(n: int, amount: int = 12_500, late_fee: int = 350) -> list[dict[str, Any]]:
    return [
        {"bill_id": f"B2026{11 - i:02d}-{n}", "period": f"2026{11 - i:02d}", "amount": amount,
         "late_fee": late_fee, "due_date": "2026-12-15"}
        for i in range(2)
    ]  # fmt: skip


def data_set(callback_url: str = "") -> dict[str, Any]:
    water_accounts = [
        {"bill_key": f"31000{n:05d}", "holder": "张三丰", "bills": bills(n)} for n in range(1, 200)
    ]
    water_accounts.append({"bill_key": "3100099999", "holder": "李四", "bills": []})
    gas_accounts = [
        {"bill_key": f"G{n:07d}", "holder": "王五", "bills": bills(n, 8_000, 0)}
        for n in range(1, 50)
    ]
    return {
        "channel": CHANNEL,
        "callback_url": callback_url,
        "billers": [
            {"id": "WATER01", "key": WATER_KEY.hex(), "accounts": water_accounts},
            {"id": "GAS01", "key": GAS_KEY.hex(), "accounts": gas_accounts,
             "partial_allowed": True},
        ],
    }  # fmt: skip


class SimControl:
    def __init__(self, url: str) -> None:
        self.url = url

    def behave(self, biller: str, mode: str, **extra: Any) -> None:
        answer = local().post(
            f"{self.url}/sim/behaviour", json={"biller": biller, "mode": mode, **extra}
        )
        answer.raise_for_status()

    def state(self) -> dict[str, Any]:
        found: dict[str, Any] = local().get(f"{self.url}/sim/state").json()
        return found

    def payments(self, biller: str = "WATER01") -> dict[str, Any]:
        found: dict[str, Any] = self.state()["billers"][biller]["payments"]
        return found

    def stats(self) -> dict[str, int]:
        """Requests and answers by route and status since the last reset."""
        found: dict[str, int] = local().get(f"{self.url}/sim/stats").json()
        return found

    def reset(self) -> None:
        local().post(f"{self.url}/sim/reset").raise_for_status()
