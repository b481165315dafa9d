"""The simulated biller, its own process, spoken to by the channel's real adapter: each answer
of docs/biller-protocol.md and each injectable failure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from cardsvc.bills.adapter import Answer, BillerClient, BillerEndpoint, NoAnswer, biller_http
from cardsvc.hsm import HsmClient
from terminals.devices.billersim.biller import presentment_reference
from tests.billersim import GAS_KEY, WATER_KEY, SimControl


@pytest.fixture
async def channel(hsm: HsmClient) -> AsyncIterator[BillerClient]:
    await hsm.key_import("BILLER_WATER01", "biller-mac", WATER_KEY, "HMAC-SHA256")
    await hsm.key_import("BILLER_GAS01", "biller-mac", GAS_KEY, "HMAC-SHA256")
    await hsm.key_import("BILLER_WRONG", "biller-mac", bytes(32), "HMAC-SHA256")
    async with biller_http() as http:
        yield BillerClient(http, hsm, "CITYCARD", timeout=0.5)


def water(sim: SimControl, label: str = "BILLER_WATER01") -> BillerEndpoint:
    return BillerEndpoint("WATER01", sim.url, label)


async def present(channel: BillerClient, biller: BillerEndpoint, bill_key: str) -> dict[str, Any]:
    answer = await channel.call(biller, "/bills/query", f"query:{bill_key}", {"bill_key": bill_key})
    assert answer.result == "presented", answer.body
    presentment: dict[str, Any] = answer.body["presentment"]
    return presentment


async def pay(
    channel: BillerClient, biller: BillerEndpoint, serial: str, p: dict[str, Any], bill_key: str,
    amount: int | None = None,
) -> Answer:  # fmt: skip
    body = {"serial": serial, "reference": p["reference"], "bill_key": bill_key,
            "amount": p["amount_due"] if amount is None else amount, "sub_channel": "online",
            "paid_at": "2026-12-02T06:00:05Z", "date": "2026-12-02"}  # fmt: skip
    return await channel.call(biller, "/bills/payments", f"pay:{serial}", body)


async def status(channel: BillerClient, biller: BillerEndpoint, serial: str, n: int = 1) -> str:
    answer = await channel.call(biller, "/bills/status", f"status:{serial}:{n}", {"serial": serial})
    return answer.result


def test_presentment_references_of_two_bills_never_meet() -> None:
    # Without a separator "B-1" presented 23rd and "B-12" presented 3rd hash the same text, and
    # the host rightly refuses the second payment of one presentment (AlreadyPaying).
    assert presentment_reference("WATER01", "B-1", 23) != presentment_reference(
        "WATER01", "B-12", 3
    )
    references = {
        presentment_reference("WATER01", f"B-{b}", n) for b in range(100) for n in range(100)
    }
    assert len(references) == 100 * 100


async def test_query_answers(channel: BillerClient, sim: SimControl) -> None:
    biller = water(sim)
    p = await present(channel, biller, "3100000001")
    assert (p["holder_masked"], p["amount_due"], p["late_fee"]) == ("张**", 12_850, 350)
    assert (p["period"], p["partial_allowed"], p["min_amount"]) == ("202611", False, 12_850)
    nobody = await channel.call(biller, "/bills/query", "query:x", {"bill_key": "3199999999"})
    assert nobody.body == {"result": "no_such_customer"}
    paid_up = await channel.call(biller, "/bills/query", "query:y", {"bill_key": "3100099999"})
    assert paid_up.body == {"result": "nothing_due"}


async def test_payment_once_per_serial_and_per_bill(channel: BillerClient, sim: SimControl) -> None:
    biller = water(sim)
    p = await present(channel, biller, "3100000002")
    first = await pay(channel, biller, "S1", p, "3100000002")
    assert first.result == "success"
    assert first.body["receipt_no"]
    again = await pay(channel, biller, "S1", p, "3100000002")
    assert again.body == first.body
    other = await pay(channel, biller, "S2", p, "3100000002")
    assert (other.result, other.body["reason"]) == ("failure", "already_paid")
    short = await pay(channel, biller, "S3", await present(channel, biller, "3100000002"),
                      "3100000002", amount=100)  # fmt: skip
    assert (short.result, short.body["reason"]) == ("failure", "amount_mismatch")
    # The same idempotency key with another body changes nothing.
    conflict = await channel.call(biller, "/bills/status", "pay:S1", {"serial": "S1"})
    assert (conflict.status, conflict.body["error"]) == (409, "IdempotencyConflict")


async def test_partial_payment_where_allowed(channel: BillerClient, sim: SimControl) -> None:
    gas = BillerEndpoint("GAS01", sim.url, "BILLER_GAS01")
    p = await present(channel, gas, "G0000001")
    assert (p["partial_allowed"], p["min_amount"]) == (True, 1)
    assert (await pay(channel, gas, "G1", p, "G0000001", amount=3_000)).result == "success"


async def test_lost_answer_is_processed(channel: BillerClient, sim: SimControl) -> None:
    biller = water(sim)
    p = await present(channel, biller, "3100000003")
    sim.behave("WATER01", "lost", bill_key="3100000003", times=1)
    with pytest.raises(NoAnswer) as lost:
        await pay(channel, biller, "S4", p, "3100000003")
    assert lost.value.reason.startswith("connection")
    assert await status(channel, biller, "S4") == "success"


async def test_slow_answer_times_out_but_pays(channel: BillerClient, sim: SimControl) -> None:
    biller = water(sim)
    p = await present(channel, biller, "3100000004")
    sim.behave("WATER01", "slow", bill_key="3100000004", delay_ms=1500, times=1)
    with pytest.raises(NoAnswer) as slow:
        await pay(channel, biller, "S5", p, "3100000004")
    assert slow.value.reason == "timeout"
    assert await status(channel, biller, "S5") == "success"


async def test_bad_signature_is_no_answer(channel: BillerClient, sim: SimControl) -> None:
    biller = water(sim)
    p = await present(channel, biller, "3100000005")
    sim.behave("WATER01", "bad_signature", times=1)
    with pytest.raises(NoAnswer) as forged:
        await pay(channel, biller, "S6", p, "3100000005")
    assert forged.value.reason.startswith("signature")
    # Repeating the payment answers the recorded result, properly signed.
    assert (await pay(channel, biller, "S6", p, "3100000005")).result == "success"


async def test_down_and_errors_are_no_answer(channel: BillerClient, sim: SimControl) -> None:
    biller = water(sim)
    sim.behave("WATER01", "down", times=1)
    with pytest.raises(NoAnswer, match="503"):
        await channel.call(biller, "/bills/query", "query:d", {"bill_key": "3100000006"})
    sim.behave("WATER01", "error", times=1)
    with pytest.raises(NoAnswer, match="500"):
        await channel.call(biller, "/bills/query", "query:e", {"bill_key": "3100000006"})
    await present(channel, biller, "3100000006")


async def test_a_request_under_the_wrong_key_is_refused(
    channel: BillerClient, sim: SimControl
) -> None:
    # The biller cannot sign its refusal with a key it does not share: no answer to believe.
    with pytest.raises(NoAnswer, match="signature"):
        await channel.call(water(sim, "BILLER_WRONG"), "/bills/query", "query:w",
                           {"bill_key": "3100000007"})  # fmt: skip


async def test_pending_then_refused(channel: BillerClient, sim: SimControl) -> None:
    biller = water(sim)
    sim.behave("WATER01", "pending", bill_key="3100000008", delay_ms=200, times=1)
    p = await present(channel, biller, "3100000008")
    assert (await pay(channel, biller, "S8", p, "3100000008")).result == "pending"
    assert await status(channel, biller, "S8") == "pending"
    sim.behave("WATER01", "refuse", times=1)
    q = await present(channel, biller, "3100000009")
    refused = await pay(channel, biller, "S9", q, "3100000009")
    assert (refused.result, refused.body["reason"]) == ("failure", "refused")


async def test_reversal_first_bars_the_serial(channel: BillerClient, sim: SimControl) -> None:
    biller = water(sim)
    p = await present(channel, biller, "3100000010")
    reversed_ = await channel.call(biller, "/bills/reversals", "reversal:S10",
                                   {"serial": "S10", "bill_key": "3100000010", "amount": 12_850,
                                    "reason": "timeout"})  # fmt: skip
    assert reversed_.body == {"result": "reversed", "serial": "S10", "was": "unknown_serial"}
    late = await pay(channel, biller, "S10", p, "3100000010")
    assert (late.result, late.body["reason"]) == ("failure", "serial_reversed")
    assert await status(channel, biller, "S10") == "reversed"
    # A paid bill reversed the same day is unpaid again.
    assert (await pay(channel, biller, "S11", p, "3100000010")).result == "success"
    undo = await channel.call(biller, "/bills/reversals", "reversal:S11",
                              {"serial": "S11", "bill_key": "3100000010", "amount": 12_850,
                               "reason": "timeout"})  # fmt: skip
    assert undo.body["was"] == "success"
    assert (await present(channel, biller, "3100000010"))["bill_id"] == p["bill_id"]


async def test_a_reversal_after_the_billers_cut_is_refused_and_a_refund_undoes(
    channel: BillerClient, sim: SimControl
) -> None:
    biller = water(sim)
    p = await present(channel, biller, "3100000012")
    assert (await pay(channel, biller, "S12", p, "3100000012")).result == "success"
    sim.behave("WATER01", "after_cut", bill_key="3100000012", times=1)
    body = {"serial": "S12", "bill_key": "3100000012", "amount": p["amount_due"],
            "reason": "timeout"}  # fmt: skip
    refused = await channel.call(biller, "/bills/reversals", "reversal:S12", body)
    assert refused.body == {"result": "refused", "serial": "S12", "reason": "after_cut"}
    assert await status(channel, biller, "S12") == "success"  # the payment stands
    refund = {"refund_serial": "R12", "original_serial": "S12", "bill_key": "3100000012",
              "amount": p["amount_due"], "date": "2026-12-03"}  # fmt: skip
    done = await channel.call(biller, "/bills/refunds", "refund:R12", refund)
    assert done.result == "refunded"
    assert sim.payments()["S12"]["state"] == "refunded"
