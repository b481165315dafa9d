"""Composition root of the worker: the job table, assembled from each package's ``jobs()``."""

from __future__ import annotations

import settlement.components
import terminals.components
from cardsvc import components
from cardsvc.jobs.worker import Job


def all_jobs() -> tuple[Job, ...]:
    """Every periodic job, in the order one worker pass runs them."""
    return (*terminals.components.jobs(), *components.jobs(), *settlement.components.jobs())
