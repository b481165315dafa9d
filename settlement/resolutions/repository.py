"""SQL of break proposals."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from settlement.resolutions.models import BreakProposal, ProposalStatus


async def add(session: AsyncSession, proposal: BreakProposal) -> BreakProposal:
    session.add(proposal)
    await session.flush()
    return proposal


async def get(
    session: AsyncSession, proposal_id: int, *, for_update: bool = False
) -> BreakProposal | None:
    stmt = select(BreakProposal).where(BreakProposal.id == proposal_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def of_break(session: AsyncSession, break_id: int) -> list[BreakProposal]:
    stmt = select(BreakProposal).where(BreakProposal.break_id == break_id)
    return list((await session.execute(stmt.order_by(BreakProposal.id))).scalars())


async def pending_of(session: AsyncSession, break_ids: Sequence[int]) -> set[int]:
    """Which of these breaks have a proposal waiting for approval."""
    if not break_ids:
        return set()
    stmt = select(BreakProposal.break_id).where(
        BreakProposal.break_id.in_(list(break_ids)),
        BreakProposal.status == ProposalStatus.proposed,
    )
    return set((await session.execute(stmt)).scalars())


async def pending(session: AsyncSession, *, limit: int) -> list[BreakProposal]:
    stmt = (
        select(BreakProposal)
        .where(BreakProposal.status == ProposalStatus.proposed)
        .order_by(BreakProposal.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())
