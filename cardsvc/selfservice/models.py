"""A resident's online access (docs/self-service.md): the password, the lockout, the session
version every resident token carries, and the one live activation code a counter issued.

Nothing here rebuilds a secret: the password is an argon2 hash and the activation code an HMAC
under a key derived from the token secret; a new code overwrites the old one (the old is void).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc.db import Base, BigIntPK


class ResidentCredential(Base):
    __tablename__ = "resident_credentials"
    __table_args__ = (
        CheckConstraint("failed_logins >= 0", name="failed_logins_not_negative"),
        CheckConstraint("code_failures >= 0", name="code_failures_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id"), unique=True)
    # None until the resident activates online access with a code.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    activated_at: Mapped[datetime | None]
    password_changed_at: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    # Wrong passwords in a row; at CARDSVC_RESIDENT_MAX_FAILED_LOGINS logins are refused until
    # ``locked_until`` (or a counter's unlock).
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    # Carried by every resident token; raised by a password change, an activation, a logout and
    # the resident's own loss report, which ends every token issued before at once.
    session_version: Mapped[int] = mapped_column(default=0)
    # The live activation code (at most one): its HMAC, the card it was issued for, its expiry
    # and the wrong codes tried against it (at CARDSVC_RESIDENT_MAX_CODE_FAILURES it is void).
    code_hash: Mapped[str | None] = mapped_column(String(64))
    code_card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id"))
    code_expires_at: Mapped[datetime | None]
    code_failures: Mapped[int] = mapped_column(default=0)
    code_issued_at: Mapped[datetime | None]
    code_issued_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
