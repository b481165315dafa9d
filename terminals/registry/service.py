"""Registry rules: merchants (15-digit ids) and terminals (12-digit numbers, one PSAM each)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.audit import service as audit
from cardsvc.errors import Conflict, NotFound
from terminals.registry import repository
from terminals.registry.models import (
    Merchant,
    MerchantCategory,
    MerchantStatus,
    Terminal,
    TerminalKind,
    TerminalStatus,
)
from terminals.registry.schemas import TerminalOut


async def create_merchant(
    session: AsyncSession,
    *,
    merchant_no: str,
    name: str,
    category: MerchantCategory,
    settlement_account: str,
    actor: str,
) -> Merchant:
    if await repository.merchant_by_no(session, merchant_no) is not None:
        raise Conflict(f"merchant {merchant_no} already exists")
    merchant = Merchant(
        merchant_no=merchant_no,
        name=name,
        category=category,
        settlement_account=settlement_account,
        status=MerchantStatus.active,
    )
    await repository.add(session, merchant)
    await audit.record(
        session,
        actor=actor,
        action="merchant.create",
        entity="merchant",
        entity_id=merchant_no,
        after={"name": name, "category": category.value},
    )
    return merchant


async def require_merchant(session: AsyncSession, merchant_no: str) -> Merchant:
    merchant = await repository.merchant_by_no(session, merchant_no)
    if merchant is None:
        raise NotFound(f"merchant {merchant_no} not found")
    return merchant


async def create_terminal(
    session: AsyncSession,
    *,
    terminal_no: str,
    psam_no: str,
    merchant_no: str,
    kind: TerminalKind = TerminalKind.pos,
    description: str = "",
    actor: str,
) -> Terminal:
    merchant = await require_merchant(session, merchant_no)
    if await repository.terminal_by_no(session, terminal_no) is not None:
        raise Conflict(f"terminal {terminal_no} already exists")
    if await repository.terminal_by_psam(session, psam_no) is not None:
        raise Conflict(f"PSAM {psam_no} is already installed in another terminal")
    terminal = Terminal(
        terminal_no=terminal_no,
        psam_no=psam_no,
        merchant_id=merchant.id,
        kind=kind,
        status=TerminalStatus.active,
        description=description,
        blacklist_version=0,
        params_version=0,
    )
    await repository.add(session, terminal)
    await audit.record(
        session,
        actor=actor,
        action="terminal.create",
        entity="terminal",
        entity_id=terminal_no,
        after={"psam_no": psam_no, "merchant_no": merchant_no, "kind": kind.value},
    )
    return terminal


async def _locked_terminal(session: AsyncSession, terminal_no: str) -> Terminal:
    terminal = await repository.terminal_by_no(session, terminal_no, for_update=True)
    if terminal is None:
        raise NotFound(f"terminal {terminal_no} not found")
    return terminal


async def set_terminal_kind(
    session: AsyncSession, terminal_no: str, kind: TerminalKind, *, actor: str
) -> Terminal:
    """Change what the terminal may do; its next request is judged by the new kind."""
    terminal = await _locked_terminal(session, terminal_no)
    before = terminal.kind
    terminal.kind = kind
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action="terminal.kind",
        entity="terminal",
        entity_id=terminal_no,
        before={"kind": before.value},
        after={"kind": kind.value},
    )
    return terminal


async def set_terminal_status(
    session: AsyncSession, terminal_no: str, status: TerminalStatus, *, actor: str
) -> Terminal:
    """The registry's half of a status change (the row and its audit entry). Callers use
    :func:`terminals.access.service.set_terminal_status`, which also ends the terminal's sessions
    when it stops being active: sessions belong to access, which builds on the registry."""
    terminal = await _locked_terminal(session, terminal_no)
    before = terminal.status
    if before is TerminalStatus.retired and status is not TerminalStatus.retired:
        raise Conflict("a retired terminal cannot come back")
    terminal.status = status
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action="terminal.status",
        entity="terminal",
        entity_id=terminal_no,
        before={"status": before.value},
        after={"status": status.value},
    )
    return terminal


async def terminal_view(session: AsyncSession, terminal: Terminal) -> TerminalOut:
    merchant = await repository.merchant_by_id(session, terminal.merchant_id)
    return TerminalOut(
        terminal_no=terminal.terminal_no,
        psam_no=terminal.psam_no,
        merchant_no=merchant.merchant_no if merchant else "",
        kind=terminal.kind,
        status=terminal.status,
        description=terminal.description,
        blacklist_version=terminal.blacklist_version,
        params_version=terminal.params_version,
        versions_reported_at=terminal.versions_reported_at,
        last_sign_in_at=terminal.last_sign_in_at,
    )


async def list_terminals(
    session: AsyncSession, merchant_no: str | None = None
) -> list[TerminalOut]:
    merchant_id = None
    if merchant_no is not None:
        merchant_id = (await require_merchant(session, merchant_no)).id
    return [
        await terminal_view(session, t)
        for t in await repository.list_terminals(session, merchant_id)
    ]


async def record_versions(
    session: AsyncSession,
    terminal_id: int,
    blacklist_version: int,
    params_version: int,
    now: datetime,
) -> None:
    """The list versions a terminal reports it holds (the registry shows how far behind it is)."""
    await repository.record_versions(session, terminal_id, blacklist_version, params_version, now)


async def terminal_with_merchant(
    session: AsyncSession, terminal_no: str
) -> tuple[Terminal, Merchant] | None:
    """The terminal with this number and its merchant; None when no terminal has it."""
    return await repository.terminal_with_merchant(session, terminal_no)


async def record_sign_in(session: AsyncSession, terminal_id: int, now: datetime) -> None:
    """When the terminal last signed in (the registry shows it)."""
    await repository.record_sign_in(session, terminal_id, now)
