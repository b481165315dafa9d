"""Staff API shapes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from cardsvc.staff.auth import Role


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type name, not a secret
    expires_in: int
    roles: list[Role]


class StaffCreate(BaseModel):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    password: str = Field(min_length=10, max_length=256)
    roles: list[Role] = Field(min_length=1)
    display_name: str = Field(default="", max_length=128)


class StaffOut(BaseModel):
    id: int
    username: str
    display_name: str
    roles: list[Role]
    active: bool
    locked: bool


class RolesChange(BaseModel):
    roles: list[Role] = Field(min_length=1, max_length=len(Role))
