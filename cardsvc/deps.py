"""FastAPI dependencies: the request's unit of work and the process resources."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc.audit import service as audit
from cardsvc.cache import Cache
from cardsvc.db import read_sessions, unit_of_work
from cardsvc.hsm import HsmClient
from cardsvc.pinpads import PinPads
from cardsvc.resources import Resources
from cardsvc.settings import Settings


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


async def _resources_dep(request: Request) -> Resources:
    # The dependencies here are coroutines: FastAPI runs a plain ``def`` dependency in the thread
    # pool, a hop that cost a busy worker more CPU than the dependency itself.
    return get_resources(request)


ResourcesDep = Annotated[Resources, Depends(_resources_dep)]


async def get_session(request: Request, resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    """One session per request, committed when the endpoint returns and rolled back if it raises.

    Function scope (below): the commit happens before the response is sent, so a terminal never
    holds an answer the database does not (a request-scoped dependency would end after it). A
    request that wrote an audit entry wakes the sealer once it has committed."""
    async with unit_of_work(resources.sessions) as session:
        yield session
    if session.info.get(audit.RECORDED):
        audit_sealer = getattr(request.app.state, "audit_sealer", None)
        if audit_sealer is not None:
            audit_sealer.notify()


async def get_sessions(resources: ResourcesDep) -> async_sessionmaker[AsyncSession]:
    """For a short read of its own, closed before the request calls the HSM or hashes a password
    (no connection or row lock is held across such a wait: docs/architecture.md §11)."""
    return read_sessions(resources.engine)


async def get_settings_dep(resources: ResourcesDep) -> Settings:
    return resources.settings


async def get_cache(resources: ResourcesDep) -> Cache:
    return resources.cache


async def get_hsm(resources: ResourcesDep) -> HsmClient:
    return resources.hsm


async def get_pin_pads(request: Request) -> PinPads:
    """The PIN pads port's adapter, handed to the app by its composition root."""
    pin_pads: PinPads = request.app.state.pin_pads
    return pin_pads


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
CacheDep = Annotated[Cache, Depends(get_cache)]
HsmDep = Annotated[HsmClient, Depends(get_hsm)]
PinPadsDep = Annotated[PinPads, Depends(get_pin_pads)]


def client_address(request: Request, settings: Settings) -> str | None:
    """The address of the client a request comes from, for the per-address login limits: the TCP
    peer, unless it is one of ``CARDSVC_TRUSTED_PROXIES``; then the nearest address of
    ``X-Forwarded-For`` (read from the right, the hops the trusted proxies added) that is not a
    trusted proxy itself. A hop that is not an address stops the walk at the last trusted one: a
    client cannot choose the address it is counted under."""
    peer = request.client.host if request.client else None
    if peer is None or not settings.trusted_proxies or not _trusted(peer, settings):
        return peer
    hops = [h.strip() for v in request.headers.getlist("x-forwarded-for") for h in v.split(",")]
    nearest = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return nearest
        if not _trusted(hop, settings):
            return hop
        nearest = hop
    return nearest


def _trusted(address: str, settings: Settings) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in settings.trusted_proxies)
