"""What the ``cardsvc`` package brings to the composition roots: its routers, command groups and
jobs (docs/architecture.md, "Where things are assembled"). The roots only assemble these lists.

The imports are inside the functions: the command line does not load the web layer, and the API
does not load the command groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click
    from fastapi import APIRouter

    from cardsvc.jobs.worker import Job


def routers() -> list[APIRouter]:
    """Issuance: staff auth, residents, applications, cards, blacklist, audit; online accounts;
    resident self-service."""
    from cardsvc.accounts.endpoints import router as accounts_router
    from cardsvc.applications.endpoints import router as applications_router
    from cardsvc.audit.endpoints import router as audit_router
    from cardsvc.bank.endpoints import router as bank_router
    from cardsvc.bills.endpoints import me_router as my_bills_router
    from cardsvc.bills.endpoints import router as bills_router
    from cardsvc.blacklist.endpoints import router as blacklist_router
    from cardsvc.cards.endpoints import router as cards_router
    from cardsvc.personalization.endpoints import router as personalization_router
    from cardsvc.residents.endpoints import router as residents_router
    from cardsvc.selfservice.endpoints import router as selfservice_router
    from cardsvc.staff.endpoints import router as staff_router

    return [
        staff_router,
        residents_router,
        applications_router,
        personalization_router,
        cards_router,
        blacklist_router,
        audit_router,
        accounts_router,
        bank_router,
        bills_router,
        my_bills_router,
        selfservice_router,
    ]


def cli_groups() -> list[click.Command]:
    from cardsvc.applications.cli import applications
    from cardsvc.audit.cli import audit
    from cardsvc.cards.cli import cards
    from cardsvc.ledger.cli import ledger
    from cardsvc.personalization.cli import counter
    from cardsvc.residents.cli import residents
    from cardsvc.staff.cli import staff

    return [ledger, staff, audit, residents, applications, cards, counter]


def jobs() -> list[Job]:
    from cardsvc.bills.tasks import AGE_BILL_CASH, BILL_OUTBOX
    from cardsvc.cards.tasks import EXPIRE_CARDS, RELEASE_BALANCES
    from cardsvc.clearing.tasks import DAY_CUT

    return [DAY_CUT, RELEASE_BALANCES, EXPIRE_CARDS, BILL_OUTBOX, AGE_BILL_CASH]
