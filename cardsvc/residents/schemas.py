"""Resident API shapes. The ID and the name are masked unless the caller asks to reveal them."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field


class ResidentCreate(BaseModel):
    resident_id: str = Field(min_length=18, max_length=18, description="GB 11643 resident ID")
    name: str = Field(min_length=1, max_length=30)
    phone: str = Field(pattern=r"^\+?\d{6,20}$")
    address: str = Field(min_length=1, max_length=255)
    sex: str | None = Field(default=None, pattern=r"^[MF]$", description="checked against the ID")
    birth_date: date | None = Field(default=None, description="checked against the ID")


class ResidentContactUpdate(BaseModel):
    phone: str | None = Field(default=None, pattern=r"^\+?\d{6,20}$")
    address: str | None = Field(default=None, min_length=1, max_length=255)


class ResidentLookup(BaseModel):
    resident_id: str = Field(min_length=18, max_length=18)


class ResidentOut(BaseModel):
    id: int
    resident_id: str = Field(description="masked (first 3 and last 4 characters) unless revealed")
    name: str = Field(description="masked unless revealed")
    sex: str
    birth_date: date | None = Field(default=None, description="only when revealed")
    phone: str
    address: str
