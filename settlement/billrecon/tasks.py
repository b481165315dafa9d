"""The reconciliation job (``cardsvc worker``, job ``bill-reconciliation``): builds the file of
every closed day that has none for each biller, then sends every file whose next attempt is due
(docs/bills.md §11). Each send happens with no database transaction open; a send without an
answer is tried again after 60 s, doubling, at most an hour apart, until the biller answers."""

from __future__ import annotations

from datetime import datetime

from cardsvc.bills.adapter import BillerClient, biller_http
from cardsvc.hsm.connect import open_hsm_on_first_use
from cardsvc.jobs.worker import Job
from cardsvc.resources import Storage
from settlement.billrecon import service


async def reconcile_due(storage: Storage, now: datetime) -> str:
    settings = storage.settings
    async with open_hsm_on_first_use(settings) as hsm, biller_http() as http:
        client = BillerClient(
            http, hsm, settings.bills_channel_id, settings.bill_recon_timeout_seconds
        )
        counts = await service.run_due(storage.sessions, client, settings.bills_channel_id, now)
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing due"


BILL_RECONCILIATION = Job(
    "bill-reconciliation", lambda s: s.worker_bill_recon_interval_seconds, reconcile_due
)
