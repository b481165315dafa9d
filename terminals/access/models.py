"""Terminal sessions (DESIGN §9 Sign-in): the session MAC key (as the HSM's opaque blob) and the
highest sequence number seen, bumped atomically so that a replayed or reordered request fails."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc import clock
from cardsvc.db import Base


class TerminalSession(Base):
    __tablename__ = "terminal_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # 16 random bytes, hex
    terminal_id: Mapped[int] = mapped_column(ForeignKey("terminals.id"), index=True)
    key_blob: Mapped[bytes] = mapped_column(LargeBinary)  # key_under_lmk from TERMINAL_SESSION_OPEN
    key_kcv: Mapped[str] = mapped_column(String(6))
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked: Mapped[bool] = mapped_column(default=False)
