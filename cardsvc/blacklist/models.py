"""Blacklist: a versioned log of changes and the current entries (DESIGN §8, §9 Lists)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc import clock
from cardsvc.db import Base, BigIntPK


class ListVersion(Base):
    """Monotonic version per published list; the row lock serializes version bumps."""

    __tablename__ = "list_versions"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class BlacklistChangeRow(Base):
    __tablename__ = "blacklist_changes"
    __table_args__ = (CheckConstraint("action IN ('add', 'remove')", name="action"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, unique=True)
    asn: Mapped[str] = mapped_column(String(16), index=True)
    action: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(64))
    effective_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class BlacklistEntry(Base):
    """Cards on the list now (one row per ASN)."""

    __tablename__ = "blacklist_entries"

    asn: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64))
    effective_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(BigInteger)
