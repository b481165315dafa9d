"""Helpers of the clearing-day tests."""

from __future__ import annotations

from datetime import date

from cardsvc.clearing import repository as days
from cardsvc.clearing.models import DayStatus
from cardsvc.resources import Resources


async def open_day(resources: Resources) -> date | None:
    async with resources.sessions() as session:
        return await days.open_day(session)


async def status_of(resources: Resources, day: date) -> DayStatus | None:
    async with resources.sessions() as session:
        row = await days.get(session, day)
    return None if row is None else row.status
