"""Refused records that paid, as an outside vendor's client meets them (tests/vendor.py, written
from docs/terminal-protocol.md alone): the answer has §7's shape and §6.1's codes, a repeat is the
first answer, and the host keeps a trail of each record whose TAC shows the chip paid."""

from __future__ import annotations

from datetime import timedelta

import httpx

from cardsvc import clock
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind
from cardsvc.resources import Resources
from terminals.devices.bus import BusValidator
from terminals.devices.psam import Psam
from tests.factories import World, issue_cards, psam_no
from tests.terminals.helpers import float_balance, host, tap
from tests.vendor import VendorTerminal, check_error

UPLOADS = "/api/v1/terminal/uploads"
ANSWER = {
    "batch_no", "upload_id", "clearing_date", "record_count", "accepted_count", "accepted_amount",
    "refused_count", "refused_amount", "ledger_transaction_id", "results",
}  # fmt: skip


async def test_refused_records_that_paid_are_answered_as_refused_and_leave_a_trail(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    chips = await issue_cards(resources, [21, 22, 23], balance=2_000)
    (no1, chip1), (no2, chip2), (no3, chip3) = chips.items()
    mine, other = world.bus_terminals[:2]
    now = clock.now()

    def validator(terminal: str, shift: timedelta = timedelta()) -> BusValidator:
        return BusValidator(host(client, terminal), Psam.dev(terminal), clock=lambda: now + shift)

    # 02: a fare below the amount (impossible; the TAC does not cover the fare); 05: made 40 days
    # ago; 07: made by another terminal's PSAM. Each TAC is the chip's own.
    bad_fare = {**tap(validator(mine), chip1).record, "fare": 0}
    ancient = tap(validator(mine, -timedelta(days=40)), chip2).record
    foreign = tap(validator(other), chip3).record
    records = [bad_fare, ancient, foreign]
    batch = {
        "batch_no": 41, "psam_no": psam_no(mine), "record_count": 3,
        "total_amount": sum(r["amount"] for r in records), "blacklist_version": 0,
        "params_version": 0, "records": records,
    }  # fmt: skip
    pos = VendorTerminal(client, mine, psam_no(mine))
    await pos.sign_in()
    answer = await pos.ok(UPLOADS, batch)
    assert set(answer) == ANSWER
    assert [(r["index"], r["code"]) for r in answer["results"]] == [(0, "02"), (1, "05"), (2, "07")]
    assert (answer["accepted_count"], answer["accepted_amount"], answer["refused_count"]) == (
        0,
        0,
        3,
    )
    assert answer["refused_amount"] == batch["total_amount"]
    # The retry rule: the same batch again is the first answer; other content is a conflict.
    assert await pos.ok(UPLOADS, batch) == answer
    check_error(
        await pos.send("POST", UPLOADS, {**batch, "records": records[:2], "record_count": 2,
                                         "total_amount": bad_fare["amount"] + ancient["amount"]}),
        409, "IdempotencyConflict",
    )  # fmt: skip
    async with resources.sessions() as session:
        found = await breaks.list_breaks(session, kind=BreakKind.refused_paid)
    assert sorted((b.asn, b.amount, b.status, str(b.clearing_date)) for b in found) == sorted(
        (no, r["amount"], "open", answer["clearing_date"])
        for no, r in ((no1, bad_fare), (no2, ancient), (no3, foreign))
    )
    for no in chips:
        assert await float_balance(resources, no) == 2_000  # nothing booked
