"""SQL of the registry: merchants and terminals."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from terminals.registry.models import Merchant, Terminal


async def merchant_by_no(session: AsyncSession, merchant_no: str) -> Merchant | None:
    return (
        await session.execute(select(Merchant).where(Merchant.merchant_no == merchant_no))
    ).scalar_one_or_none()


async def merchant_by_id(session: AsyncSession, merchant_id: int) -> Merchant | None:
    return await session.get(Merchant, merchant_id)


async def list_merchants(session: AsyncSession, limit: int = 500) -> list[Merchant]:
    return list(
        (
            await session.execute(select(Merchant).order_by(Merchant.merchant_no).limit(limit))
        ).scalars()
    )


async def add(session: AsyncSession, row: Merchant | Terminal) -> None:
    session.add(row)
    await session.flush()


async def terminal_by_no(
    session: AsyncSession, terminal_no: str, *, for_update: bool = False
) -> Terminal | None:
    stmt = select(Terminal).where(Terminal.terminal_no == terminal_no)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def terminal_by_psam(session: AsyncSession, psam_no: str) -> Terminal | None:
    return (
        await session.execute(select(Terminal).where(Terminal.psam_no == psam_no))
    ).scalar_one_or_none()


async def terminal_with_merchant(
    session: AsyncSession, terminal_no: str
) -> tuple[Terminal, Merchant] | None:
    stmt = (
        select(Terminal, Merchant)
        .join(Merchant, Merchant.id == Terminal.merchant_id)
        .where(Terminal.terminal_no == terminal_no)
    )
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else (row[0], row[1])


async def list_terminals(
    session: AsyncSession, merchant_id: int | None = None, limit: int = 1000
) -> list[Terminal]:
    stmt = select(Terminal).order_by(Terminal.terminal_no).limit(limit)
    if merchant_id is not None:
        stmt = stmt.where(Terminal.merchant_id == merchant_id)
    return list((await session.execute(stmt)).scalars())


async def record_versions(
    session: AsyncSession,
    terminal_id: int,
    blacklist_version: int,
    params_version: int,
    now: datetime,
) -> None:
    await session.execute(
        update(Terminal)
        .where(Terminal.id == terminal_id)
        .values(
            blacklist_version=blacklist_version,
            params_version=params_version,
            versions_reported_at=now,
        )
        .execution_options(synchronize_session=False)
    )


async def record_sign_in(session: AsyncSession, terminal_id: int, now: datetime) -> None:
    await session.execute(
        update(Terminal)
        .where(Terminal.id == terminal_id)
        .values(last_sign_in_at=now)
        .execution_options(synchronize_session=False)
    )
