"""Audit trail: an append-only list of staff actions, chained and keyed by the HSM (DESIGN §8,
§12; docs/architecture.md §11, "The audit trail")."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base, BigIntPK


class AuditEntry(Base):
    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # The entry's number in the chain and its MAC, given when it is sealed (after its commit):
    # both are null until then.
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    # Canonical JSON (sorted keys, no spaces), exactly the text that is digested.
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    mac: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        # The entries still to seal (unnumbered, or numbered in a batch being sealed).
        Index(
            "ix_audit_entries_unsealed",
            "id",
            postgresql_where=text("mac IS NULL"),
            sqlite_where=text("mac IS NULL"),
        ),
    )


class AuditHead(Base):
    """One row: the last sealed entry (its number and MAC). Only the sealer locks it, once per
    batch; writers of entries never touch it."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    mac: Mapped[str] = mapped_column(String(64))
