"""Upload payloads (DESIGN §9; docs/terminal-protocol.md §7).

The batch header is checked strictly (a malformed header refuses the whole upload with 422
naming the field; unknown fields, strings and fractions for integers are malformed);
records are taken as plain objects and validated one by one in the service, because a malformed
record must get result 02 without costing the rest of the batch.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from terminals.access.schemas import BIGINT_MAX, ListVersion


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    batch_no: int = Field(ge=1, le=9_999_999_999)
    psam_no: str = Field(pattern=r"^[0-9A-F]{16}$")
    record_count: int = Field(ge=0, le=2**31 - 1)
    total_amount: int = Field(ge=0, le=BIGINT_MAX)  # sum of the records' integer amounts
    blacklist_version: ListVersion
    params_version: ListVersion
    records: list[Any]


class RecordResult(BaseModel):
    index: int
    code: str
    blacklisted: bool = False
    detail: str | None = None


class UploadResponse(BaseModel):
    batch_no: int
    upload_id: int
    clearing_date: date
    record_count: int
    accepted_count: int
    accepted_amount: int
    refused_count: int
    refused_amount: int
    ledger_transaction_id: int | None
    results: list[RecordResult]
