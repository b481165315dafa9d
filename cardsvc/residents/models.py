"""Residents (cardholders). The resident ID and the name rest encrypted under the HSM's PII key;
the ID is found by a keyed hash (HMAC under PII_INDEX), never by its clear value (DESIGN §5).
Nothing else in clear rebuilds it: the mask keeps 7 of 18 characters and the birth date is only
in the ciphertext (read it with ``service.identity``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from cardsvc import clock
from cardsvc.db import Base, BigIntPK


class Resident(Base):
    __tablename__ = "residents"
    __table_args__ = (CheckConstraint("sex IN ('M', 'F')", name="sex"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    id_index: Mapped[str] = mapped_column(String(64), unique=True)  # hex HMAC-SHA256
    id_cipher: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM nonce‖ct‖tag
    id_masked: Mapped[str] = mapped_column(String(18))  # mask_resident_id: nothing that rebuilds it
    name_cipher: Mapped[bytes] = mapped_column(LargeBinary)
    name_masked: Mapped[str] = mapped_column(String(64))
    sex: Mapped[str] = mapped_column(String(1))
    phone: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    created_by: Mapped[str] = mapped_column(String(64))
