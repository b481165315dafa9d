"""Blacklist API shapes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class BlacklistChangeOut(BaseModel):
    version: int
    asn: str
    action: str
    reason: str
    effective_at: datetime


class BlacklistOut(BaseModel):
    version: int
    full: bool
    changes: list[BlacklistChangeOut]
