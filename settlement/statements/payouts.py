"""The payouts port of statement matching over the settlement's payouts
(``settlement.payouts.service``): the adapter, so that matching itself depends on the port only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from settlement.payouts import service as payouts
from settlement.statements.ports import Payout


class SettlementPayouts:
    async def find(self, session: AsyncSession, references: Sequence[str]) -> Mapping[str, Payout]:
        found = await payouts.by_references(session, references)
        return {
            ref: Payout(p.reference, p.merchant_no, p.clearing_date, p.amount, p.status.value)
            for ref, p in found.items()
        }

    async def confirm(
        self, session: AsyncSession, reference: str, *, evidence: str, actor: str
    ) -> None:
        await payouts.confirm(session, reference, evidence=evidence, actor=actor)
