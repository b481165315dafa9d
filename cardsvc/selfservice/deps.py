"""The resident's web dependency: ``current_resident``, the one way a route admits a resident.

A resident route takes ``CurrentResident`` and reads the resident from it, never from a path or
a body. The bearer token must be a resident token (a staff token never verifies here: another
key, docs/self-service.md §4) whose session version is the credential's as it is now, read in a
short session of its own (docs/architecture.md §11).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cardsvc.deps import SessionsDep, SettingsDep
from cardsvc.errors import NotAuthenticated
from cardsvc.selfservice import service
from cardsvc.selfservice.auth import ResidentPrincipal, verify_token

_bearer = HTTPBearer(auto_error=False)


async def current_resident(
    sessions: SessionsDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ResidentPrincipal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated("resident bearer token required")
    claimed = verify_token(settings, credentials.credentials)
    async with sessions() as reading:
        credential = await service.credential_of(reading, claimed)
    if credential is None:
        raise NotAuthenticated("session ended: log in again")
    return claimed


current_resident.__resident__ = True  # type: ignore[attr-defined]  # cardsvc.api.openapi

CurrentResident = Annotated[ResidentPrincipal, Depends(current_resident)]
