"""Personalization jobs: the step reached on the counter's card, so a pulled card resumes
(DESIGN §6.2: every step before END PERSONALIZATION is repeatable)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc import clock
from cardsvc.db import Base, BigIntPK


class PersoStep(StrEnum):
    started = "started"
    session_opened = "session_opened"
    keys_written = "keys_written"
    files_written = "files_written"
    ended = "ended"  # END PERSONALIZATION done: the transport key is gone, only the proof remains
    proved = "proved"


class PersoStatus(StrEnum):
    running = "running"
    failed = "failed"  # resumable
    done = "done"


class PersoJob(Base):
    __tablename__ = "perso_jobs"

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
    started_at: Mapped[datetime] = mapped_column(default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(default=clock.now)
    finished_at: Mapped[datetime | None]
