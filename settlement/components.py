"""What the ``settlement`` package brings to the composition roots: its routers, command groups
and jobs (docs/architecture.md, "Where things are assembled"). The roots only assemble these lists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click
    from fastapi import APIRouter

    from cardsvc.jobs.worker import Job


def routers() -> list[APIRouter]:
    from settlement.billrecon.endpoints import router as bill_reconciliations
    from settlement.fees.endpoints import router as fee_rules
    from settlement.payouts.endpoints import router as payouts

    return [fee_rules, payouts, bill_reconciliations]


def pages() -> list[APIRouter]:
    """The finance pages (HTML, mounted at the root: ``/finance/...``)."""
    from settlement.web.endpoints import router

    return [router]


def cli_groups() -> list[click.Command]:
    from settlement.billrecon.cli import bill_recon
    from settlement.fees.cli import fees
    from settlement.nightly.cli import settlement
    from settlement.payouts.cli import payouts

    return [settlement, fees, payouts, bill_recon]


def jobs() -> list[Job]:
    from settlement.billrecon.tasks import BILL_RECONCILIATION
    from settlement.nightly.tasks import SETTLEMENT

    return [SETTLEMENT, BILL_RECONCILIATION]
