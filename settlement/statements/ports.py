"""What statement matching needs of the payouts: the port (the payouts domain is the adapter,
``settlement.statements.payouts``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class Payout:
    reference: str
    merchant_no: str
    clearing_date: date
    amount: int  # fen
    status: str  # held, due, issued, confirmed


class Payouts(Protocol):
    async def find(self, session: AsyncSession, references: Sequence[str]) -> Mapping[str, Payout]:
        """The payouts of these references (locked for the rest of the transaction)."""
        ...

    async def confirm(
        self, session: AsyncSession, reference: str, *, evidence: str, actor: str
    ) -> None:
        """Mark the payout confirmed by the bank; ``evidence`` names the statement line."""
        ...
