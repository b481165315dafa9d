"""Parameter tables for terminals (DESIGN §9 Lists): fares, concessions by card type, the
transfer discount window and parking tariffs. Every change gets the next version, so a terminal
at version v catches up with the changes after v, like the blacklist."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc import clock
from cardsvc.db import Base


class ParameterTable(StrEnum):
    fares = "fares"
    concessions = "concessions"
    transfer = "transfer"
    parking = "parking"


class ParameterEntry(Base):
    """The current value of one (table, key)."""

    __tablename__ = "terminal_parameters"

    table_name: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(BigInteger)


class ParameterChange(Base):
    __tablename__ = "terminal_parameter_changes"
    __table_args__ = (CheckConstraint("action IN ('set', 'delete')", name="action"),)

    version: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    table_name: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(8))
    value: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
