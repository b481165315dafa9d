"""Blacklist rules: versioned add/remove with reason and effective time (DESIGN §8, §9).

Every change bumps the list version by one, so a terminal at version v catches up with
``changes_since(v)``; ``full_list`` gives the active entries for a terminal that starts afresh.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.audit import service as audit
from cardsvc.blacklist import repository
from cardsvc.blacklist.models import BlacklistChangeRow, BlacklistEntry
from cardsvc.errors import Conflict, ValidationFailed

_ASN = re.compile(r"^[0-9A-F]{16}$")


@dataclass(frozen=True)
class BlacklistChange:
    version: int
    asn: str
    action: str  # "add" | "remove"
    reason: str
    effective_at: datetime


def _check_asn(asn: str) -> str:
    asn = asn.upper()
    if not _ASN.match(asn):
        raise ValidationFailed("an ASN is 16 hexadecimal digits")
    return asn


async def current_version(session: AsyncSession) -> int:
    return await repository.current_version(session)


async def add(
    session: AsyncSession,
    *,
    asn: str,
    reason: str,
    actor: str,
    effective_at: datetime | None = None,
) -> int:
    """Put a card on the list; returns the new list version. Refuses a card already listed."""
    asn = _check_asn(asn)
    if await repository.get_entry(session, asn) is not None:
        raise Conflict("card is already on the blacklist")
    effective = effective_at or clock.now()
    version = await repository.bump_version(session)
    await repository.add_change(
        session,
        BlacklistChangeRow(
            version=version,
            asn=asn,
            action="add",
            reason=reason,
            effective_at=effective,
            actor=actor,
        ),
    )
    await repository.add_entry(
        session, BlacklistEntry(asn=asn, reason=reason, effective_at=effective, version=version)
    )
    await audit.record(
        session,
        actor=actor,
        action="blacklist.add",
        entity="blacklist",
        entity_id=str(version),
        after={"asn": asn, "reason": reason, "effective_at": effective},
    )
    return version


async def remove(session: AsyncSession, *, asn: str, reason: str, actor: str) -> int:
    asn = _check_asn(asn)
    entry = await repository.get_entry(session, asn)
    if entry is None:
        raise Conflict("card is not on the blacklist")
    version = await repository.bump_version(session)
    now = clock.now()
    await repository.add_change(
        session,
        BlacklistChangeRow(
            version=version, asn=asn, action="remove", reason=reason, effective_at=now, actor=actor
        ),
    )
    await repository.delete_entry(session, entry)
    await audit.record(
        session,
        actor=actor,
        action="blacklist.remove",
        entity="blacklist",
        entity_id=str(version),
        before={"asn": asn, "reason": entry.reason},
        after={"reason": reason},
    )
    return version


def _change(row: BlacklistChangeRow) -> BlacklistChange:
    return BlacklistChange(row.version, row.asn, row.action, row.reason, row.effective_at)


async def changes_since(session: AsyncSession, version: int) -> list[BlacklistChange]:
    return [_change(r) for r in await repository.changes_since(session, version)]


async def full_list(session: AsyncSession) -> tuple[int, list[BlacklistChange]]:
    version = await repository.current_version(session)
    entries = await repository.all_entries(session)
    return version, [
        BlacklistChange(e.version, e.asn, "add", e.reason, e.effective_at) for e in entries
    ]


async def is_blacklisted(session: AsyncSession, asn: str, at: datetime | None = None) -> bool:
    entry = await repository.get_entry(session, asn.upper())
    return entry is not None and entry.effective_at <= (at or clock.now())


async def blacklisted_among(session: AsyncSession, asns: Collection[str]) -> set[str]:
    return await repository.entries_among(session, [a.upper() for a in asns], clock.now())
