"""Personalization sessions: the server drives the card, one batch of APDUs at a time, and keeps
here what it has sent and how far the card has confirmed it, so a pulled card, a crashed agent or
a dropped network resumes (DESIGN §6.2: every step before END PERSONALIZATION is repeatable)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc import clock
from cardsvc.db import Base, BigIntPK


class PersoStep(StrEnum):
    """How far the card has confirmed the plan."""

    started = "started"
    session_opened = "session_opened"
    keys_written = "keys_written"
    files_written = "files_written"  # END PERSONALIZATION was sent after every file
    ended = "ended"  # END PERSONALIZATION done: the transport key is gone, only the proof remains
    proved = "proved"


class PersoStatus(StrEnum):
    running = "running"  # a batch is out: its responses are awaited (or a start resumes it)
    failed = "failed"  # the card refused a command: a start with the same card resumes
    spoiled = "spoiled"  # the card can never be finished (keys do not prove out, no transport key)
    done = "done"
    abandoned = "abandoned"  # a supervisor gave the chip up: the next start takes another card


# A chip is in at most one unfinished session (a blank card is personalized for one application).
_LIVE_SQL = text("status IN ('running', 'failed')")


class PersoJob(Base):
    __tablename__ = "perso_jobs"
    __table_args__ = (
        Index(
            "uq_perso_jobs_live_chip",
            "chip_serial",
            unique=True,
            postgresql_where=_LIVE_SQL,
            sqlite_where=_LIVE_SQL,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("card_applications.id"), unique=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"))
    chip_serial: Mapped[str] = mapped_column(String(16))
    reader: Mapped[str] = mapped_column(String(128))
    step: Mapped[PersoStep] = mapped_column(Enum(PersoStep, native_enum=False, length=16))
    status: Mapped[PersoStatus] = mapped_column(Enum(PersoStatus, native_enum=False, length=16))
    attempts: Mapped[int] = mapped_column(default=1)
    apdu_count: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # The batch out at the card: its number, the commands (JSON [[op, hex], ...]), and the digest
    # of the responses that produced it, so the same responses sent again get the same batch.
    seq: Mapped[int] = mapped_column(default=0)
    batch: Mapped[str | None] = mapped_column(Text)
    answered_digest: Mapped[str | None] = mapped_column(String(64))
    issued_on: Mapped[date | None]  # the start date written into 0015 and EF05
    started_by: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(default=clock.now)
    finished_at: Mapped[datetime | None]
