"""Card applications: submitted → approved | rejected → in_production → personalized → issued
(DESIGN §8)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc import clock
from cardsvc.db import Base, BigIntPK


class ApplicationStatus(StrEnum):
    submitted = "submitted"
    approved = "approved"
    rejected = "rejected"
    in_production = "in_production"
    personalized = "personalized"
    issued = "issued"


class ApplicationKind(StrEnum):
    new = "new"
    replacement = "replacement"


OPEN_STATUSES = (
    ApplicationStatus.submitted,
    ApplicationStatus.approved,
    ApplicationStatus.in_production,
    ApplicationStatus.personalized,
)
_OPEN_SQL = text("status IN ('submitted', 'approved', 'in_production', 'personalized')")


class Application(Base):
    __tablename__ = "card_applications"
    __table_args__ = (
        # One open application per resident, enforced by the database on both engines.
        Index(
            "uq_card_applications_open_resident",
            "resident_id",
            unique=True,
            postgresql_where=_OPEN_SQL,
            sqlite_where=_OPEN_SQL,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id"), index=True)
    kind: Mapped[ApplicationKind] = mapped_column(
        Enum(ApplicationKind, native_enum=False, length=16)
    )
    card_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[ApplicationStatus] = mapped_column(
        Enum(ApplicationStatus, native_enum=False, length=16)
    )
    submitted_by: Mapped[str] = mapped_column(String(64))
    submitted_at: Mapped[datetime] = mapped_column(default=clock.now)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]
    reject_reason: Mapped[str | None] = mapped_column(String(255))
    replaces_card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
    card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
    issued_by: Mapped[str | None] = mapped_column(String(64))
    issued_at: Mapped[datetime | None]
