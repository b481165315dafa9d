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
    # The session's PIN key (pin_key_under_lmk), for the PIN blocks of its PIN pad; None for
    # sessions opened before PIN keys existed.
    pin_key_blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # The highest sequence number a cardholder's PIN was checked for (before that number is
    # taken): a copy of a request in flight finds it and checks no PIN, so takes no try.
    pin_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked: Mapped[bool] = mapped_column(default=False)


class SignInNonce(Base):
    """A sign-in's nonce, kept for twice the sign-in window (``terminal_sign_in_window_seconds``):
    a captured sign-in is refused by its time after that, and by this row until then. In the
    database, so that losing the cache loses no protection."""

    __tablename__ = "terminal_sign_in_nonces"

    terminal_id: Mapped[int] = mapped_column(ForeignKey("terminals.id"), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(16), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(index=True)
