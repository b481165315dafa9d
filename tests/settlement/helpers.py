"""Helpers of the settlement tests: a day of rides uploaded by a bus and a taxi, and what the
ledger and the files hold afterwards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
from sqlalchemy import func, select

from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, LedgerTransaction
from cardsvc.ledger.schemas import AccountRef
from cardsvc.reader.link import InProcessLink
from cardsvc.resources import Resources
from terminals.devices.psam import Psam
from terminals.devices.taxi import TaxiMeter
from terminals.uploads.models import OfflineRecord
from tests.terminals.helpers import (
    BUS_MERCHANT,
    TAXI_MERCHANT,
    World,
    bus,
    host,
    issue_cards,
    tap,
)

MERCHANTS = (BUS_MERCHANT, TAXI_MERCHANT)


async def ride_day(client: httpx.AsyncClient, world: World, resources: Resources) -> date:
    """Three cards ride a bus twice and take a taxi once; both terminals upload. Returns the
    clearing date of the uploads."""
    chips = await issue_cards(resources, [11, 12, 13], balance=10000)
    validator = await bus(client, world.bus_terminals[0])
    meter = TaxiMeter(host(client, world.taxi_terminals[0]), Psam.dev(world.taxi_terminals[0]))
    await meter.start()
    for chip in chips.values():
        tap(validator, chip)
        tap(validator, chip)
        with InProcessLink(chip) as link:
            meter.pay(link, distance_m=4200)
    answers = [*await validator.upload(), *await meter.upload()]
    assert {r["code"] for a in answers for r in a["results"]} == {"00"}
    days = {a["clearing_date"] for a in answers}
    assert len(days) == 1
    return date.fromisoformat(days.pop())


@dataclass(frozen=True)
class Books:
    pending: dict[str, int]
    payable: dict[str, int]
    fee_income: int
    settlement_postings: int


async def books(resources: Resources) -> Books:
    async with resources.sessions() as session:
        pending = {
            m: await ledger.balance(session, AccountRef(AccountKind.merchant_pending, m))
            for m in MERCHANTS
        }
        payable = {
            m: await ledger.balance(session, AccountRef(AccountKind.merchant_payable, m))
            for m in MERCHANTS
        }
        fee = await ledger.balance(session, AccountRef(AccountKind.fee_income))
        postings = (
            await session.execute(
                select(func.count()).where(LedgerTransaction.tx_type == "settlement")
            )
        ).scalar_one()
    return Books(pending, payable, fee, int(postings))


async def accepted_by_merchant(resources: Resources, day: date) -> dict[int, tuple[int, int]]:
    r = OfflineRecord
    async with resources.sessions() as session:
        rows = await session.execute(
            select(r.merchant_id, func.count(), func.sum(r.amount))
            .where(r.clearing_date == day, r.result_code == "00")
            .group_by(r.merchant_id)
        )
        return {m: (int(c), int(s or 0)) for m, c, s in rows.all()}


def day_files(root: Path, day: date) -> dict[str, bytes]:
    directory = root / day.isoformat()
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
