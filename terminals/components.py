"""What the ``terminals`` package brings to the composition roots: its routers, command groups and
jobs (docs/architecture.md, "Where things are assembled"). The roots only assemble these lists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click
    from fastapi import APIRouter

    from cardsvc.jobs.worker import Job
    from cardsvc.pinpads import PinPads


def routers() -> list[APIRouter]:
    """Terminal traffic first (online authorization, purse loads, sign-in, offline uploads, lists),
    then the operators' registry and parameters."""
    from terminals.access.endpoints import router as terminal_access_router
    from terminals.bills.endpoints import router as kiosk_bills_router
    from terminals.lists.endpoints import admin_router as parameters_router
    from terminals.lists.endpoints import terminal_router as terminal_lists_router
    from terminals.loads.endpoints import router as loads_router
    from terminals.online.endpoints import router as online_router
    from terminals.registry.endpoints import router as registry_router
    from terminals.uploads.endpoints import router as uploads_router

    return [
        online_router,
        loads_router,
        terminal_access_router,
        uploads_router,
        terminal_lists_router,
        kiosk_bills_router,
        registry_router,
        parameters_router,
    ]


def cli_groups() -> list[click.Command]:
    from terminals.devices.cli import card
    from terminals.online.cli import online
    from terminals.registry.cli import merchants, terminals

    return [card, online, merchants, terminals]


def jobs() -> list[Job]:
    from terminals.loads.tasks import AGE_LOADS
    from terminals.online.tasks import EXPIRE_HOLDS

    return [EXPIRE_HOLDS, AGE_LOADS]


def pin_pads() -> PinPads:
    """The adapter of the core's PIN pads port: counters' PIN pads are signed-in terminals."""
    from terminals.access.pinpads import SessionPinPads

    return SessionPinPads()
