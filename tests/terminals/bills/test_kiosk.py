"""A kiosk pays a bill with the card and its PIN (signed terminal requests): the PIN checked by
the HSM (55 wrong, 75 locked), only a kiosk may (58), one payment per terminal serial."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cardsvc.bills.models import PaymentStatus
from cardsvc.ledger.models import AccountKind
from cardsvc.resources import Resources
from terminals.registry.models import MerchantCategory, TerminalKind
from tests.billersim import SimControl
from tests.cardsvc.bills.paying import Bills, biller_client, register_billers
from tests.factories import PIN, make_card, make_site
from tests.terminals.helpers import signed_in

FIRST = "3100000001"


@pytest.fixture
async def bills(resources: Resources, paying_sim: SimControl) -> AsyncIterator[Bills]:
    await register_billers(resources, paying_sim.url)
    async with biller_client(resources) as client:
        yield Bills(resources, client, paying_sim)


async def test_kiosk_pays_with_card_and_pin(
    bills: Bills, resources: Resources, client: httpx.AsyncClient
) -> None:
    card = await make_card(resources, 21, account=50_000)
    site = await make_site(resources, 321100040001, MerchantCategory.utility, TerminalKind.kiosk)
    kiosk = await signed_in(client, site)
    asked = await kiosk.post("/api/v1/kiosk/bills/query", {"biller": "WATER01", "bill_key": FIRST})
    assert asked.status_code == 200, asked.text
    reference = asked.json()["reference"]

    def body(serial: int, pin: str) -> dict[str, object]:
        return {"terminal_serial": serial, "asn": card.asn, "biller": "WATER01",
                "reference": reference, "pin_block": kiosk.pin_block(pin, card.asn)}  # fmt: skip

    wrong = await kiosk.post("/api/v1/kiosk/bills/payments", body(1, "000000"))
    assert wrong.status_code == 200, wrong.text
    assert (wrong.json()["response_code"], wrong.json()["approved"]) == ("55", False)
    assert await bills.available(AccountKind.resident_account, str(card.resident_id)) == 50_000
    paid = await kiosk.post("/api/v1/kiosk/bills/payments", body(2, PIN))
    out = paid.json()
    assert (out["response_code"], out["payment"]["state"]) == ("00", "pending"), out
    again = await kiosk.post("/api/v1/kiosk/bills/payments", body(2, PIN))
    assert again.json()["payment"]["replayed"] is True
    assert again.json()["payment"]["serial"] == out["payment"]["serial"]
    await bills.run()
    serial = out["payment"]["serial"]
    assert (await bills.payment(serial)).status is PaymentStatus.paid
    status = await kiosk.post("/api/v1/kiosk/bills/status", {"serial": serial})
    assert status.json()["payment"]["state"] == "paid"
    assert await bills.balance(AccountKind.resident_account, str(card.resident_id)) == 37_150


async def test_only_a_kiosk_pays_bills(
    bills: Bills, resources: Resources, client: httpx.AsyncClient
) -> None:
    card = await make_card(resources, 22, account=50_000)
    site = await make_site(resources, 321100040002, MerchantCategory.retail, TerminalKind.pos)
    pos = await signed_in(client, site)
    asked = await pos.post("/api/v1/kiosk/bills/query", {"biller": "WATER01", "bill_key": FIRST})
    assert asked.status_code == 403
    reference = (await bills.query(FIRST)).reference
    paid = await pos.post(
        "/api/v1/kiosk/bills/payments",
        {"terminal_serial": 1, "asn": card.asn, "biller": "WATER01", "reference": reference,
         "pin_block": pos.pin_block(PIN, card.asn)},
    )  # fmt: skip
    assert paid.json()["response_code"] == "58"
    assert await bills.outbox_depth() == 0
