"""Clearing days (DESIGN §5, §11): every accepted record carries the business day open when it
was accepted; the day cut closes a day (new acceptances go to the next one). A day is ``open``,
then ``closing`` from the cut until every transaction that may have taken it has ended, then
``closed`` (``cardsvc.clearing.service``)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Date, Enum, select
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base


class DayStatus(StrEnum):
    open = "open"
    closing = "closing"
    closed = "closed"


class ClearingDay(Base):
    __tablename__ = "clearing_days"

    clearing_date: Mapped[date] = mapped_column(Date, primary_key=True)
    status: Mapped[DayStatus] = mapped_column(Enum(DayStatus, native_enum=False, length=16))
    opened_at: Mapped[datetime]
    cut_at: Mapped[datetime | None]  # when it began closing
    closed_at: Mapped[datetime | None]


# The open business day (the earliest, should two ever be open), published with the table so that
# any repository may embed it as a scalar subquery and read it in the same round trip as what it
# needs (docs/architecture.md §1: a domain's tables are shared, its repository is not).
OPEN_DAY = (
    select(ClearingDay.clearing_date)
    .where(ClearingDay.status == DayStatus.open)
    .order_by(ClearingDay.clearing_date)
    .limit(1)
)
