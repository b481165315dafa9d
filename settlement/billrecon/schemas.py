"""What finance reads of the billers' reconciliations (docs/bills.md §11)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel

from settlement.billrecon.models import ReconStatus


class ReconciliationOut(BaseModel):
    clearing_date: date
    biller_code: str
    status: ReconStatus
    file_name: str
    file_sha256: str
    count: int  # detail lines of the file
    sum: int  # payments - refunds, fen
    ledger_count: int  # the day's movements of the biller's payable
    ledger_sum: int
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    disagreements: int
    sent_at: datetime | None
    answered_at: datetime | None


class ReconciliationDetail(ReconciliationOut):
    answer: dict[str, Any] | None  # the biller's last answer, as it came
