"""The settlement job (``cardsvc worker``, job ``settlement``): once a day's cutoff has passed,
settle it, and every earlier day not settled yet, oldest first (docs/settlement.md, "The worker").
Each day goes through :func:`settlement.nightly.service.run`, so a day a killed run left resumes
where it stopped, and the run's guard keeps it to one run at a time across workers and commands.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cardsvc.clearing import service as clearing
from cardsvc.hsm.connect import open_hsm_on_first_use
from cardsvc.jobs.worker import Job
from cardsvc.resources import Storage
from settlement.nightly import repository, service


async def settle_due(storage: Storage, now: datetime) -> str:
    """Settle every clearing day whose cutoff has passed by ``now`` and that is not settled.
    A day that fails stops the pass (the later days wait for it): the error is the job's."""
    settings = storage.settings
    through = clearing.business_date(settings, now) - timedelta(days=1)
    async with storage.sessions() as session:
        days = await repository.unsettled_days(session, through)
    if not days:
        return "no day to settle"
    settled = []
    async with open_hsm_on_first_use(settings) as hsm:
        for day in days:
            await service.run(storage.sessions, settings, day, hsm=hsm)
            settled.append(day.isoformat())
    return f"settled {', '.join(settled)}"


SETTLEMENT = Job("settlement", lambda s: s.worker_settlement_interval_seconds, settle_due)
