"""Concurrent authorizations on one account never overdraw it (both engines; on PostgreSQL the
requests really run at once, each in its own connection and transaction)."""

from __future__ import annotations

import asyncio

from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.resources import Resources
from terminals.online import service
from terminals.online.models import MessageKind
from terminals.online.schemas import PurchaseRequest
from tests.factories import Site, make_card
from tests.terminals.helpers import available, balance

ATTEMPTS = 12
AMOUNT = 1_000
FUNDS = 7_500  # room for 7 of the 12


async def _authorize(
    resources: Resources, site: Site, asn: str, serial: int, kind: MessageKind
) -> str:
    signed = await site.signed(resources)  # each its own session: they really run at once
    # Below the no-PIN limit: at most as many PIN checks of one account run at once as it has
    # tries left (tests/terminals/online/test_pin.py), and this is about the money.
    settings = resources.settings.model_copy(
        update={"online_no_pin_limits": {"retail": AMOUNT, "fuel": AMOUNT}}
    )
    request = PurchaseRequest(terminal_serial=serial, asn=asn, amount=AMOUNT)
    async with unit_of_work(resources.sessions) as s:
        outcome = await service.authorize(
            resources.sessions, s, signed, request, kind=kind, hsm=resources.hsm,
            settings=settings,
        )  # fmt: skip
        return outcome.row.response_code


async def test_concurrent_purchases_and_holds_never_overdraw(
    resources: Resources, shop: Site, pump: Site
) -> None:
    card = await make_card(resources, 21, account=FUNDS)
    owner = str(card.resident_id)
    jobs = [
        _authorize(
            resources,
            shop if i % 2 else pump,
            card.asn,
            i,
            MessageKind.purchase if i % 2 else MessageKind.preauth,
        )
        for i in range(1, ATTEMPTS + 1)
    ]
    codes = await asyncio.gather(*jobs)
    approved = codes.count("00")
    assert approved == FUNDS // AMOUNT
    assert set(codes) == {"00", "51"}
    purchases = sum(1 for i, c in enumerate(codes, start=1) if c == "00" and i % 2)
    assert (
        await balance(resources, AccountKind.resident_account, owner) == FUNDS - purchases * AMOUNT
    )
    assert (
        await available(resources, AccountKind.resident_account, owner) == FUNDS - approved * AMOUNT
    )
    assert (
        await balance(resources, AccountKind.merchant_pending, shop.merchant_no)
        == purchases * AMOUNT
    )
    async with resources.sessions() as s:
        assert (await ledger.check_invariants(s)).ok


async def test_concurrent_retries_of_one_serial_pay_once(resources: Resources, shop: Site) -> None:
    card = await make_card(resources, 22, account=FUNDS)
    codes = await asyncio.gather(
        *[_authorize(resources, shop, card.asn, 5, MessageKind.purchase) for _ in range(6)]
    )
    assert codes == ["00"] * 6
    assert (
        await balance(resources, AccountKind.resident_account, str(card.resident_id))
        == FUNDS - AMOUNT
    )
