"""Lists served to terminals (DESIGN §9 Lists; reference/settlement_hsm.md §1.10).

Both lists have a monotonic version. A terminal asks with the version it holds: version 0, a
version ahead of ours, or one so old that the delta would be longer than the full list, gets the
full list; otherwise the changes after its version, in order. Applying a delta in order to the
list at version v gives the list at the returned version.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.blacklist import service as blacklist
from cardsvc.errors import NotFound, ValidationFailed
from terminals.lists import repository
from terminals.lists.models import ParameterChange, ParameterEntry, ParameterTable
from terminals.lists.schemas import (
    BlacklistItem,
    BlacklistResponse,
    ParameterItem,
    ParametersResponse,
)
from terminals.registry import service as registry

MAX_DELTA = 5000
KEY_PATTERN: Final = "^[0-9A-Za-z:_-]{1,32}$"
_KEY = re.compile(KEY_PATTERN)


async def parameters_version(session: AsyncSession) -> int:
    return await repository.current_version(session)


async def blacklist_for(session: AsyncSession, since: int) -> BlacklistResponse:
    current = await blacklist.current_version(session)
    if 0 < since <= current:
        changes = await blacklist.changes_since(session, since)
        if len(changes) <= MAX_DELTA:
            return BlacklistResponse(
                version=current,
                mode="delta",
                entries=[
                    BlacklistItem(
                        version=c.version,
                        asn=c.asn,
                        action="add" if c.action == "add" else "remove",
                    )
                    for c in changes
                ],
            )
    version, entries = await blacklist.full_list(session)
    return BlacklistResponse(
        version=version,
        mode="full",
        entries=[BlacklistItem(version=e.version, asn=e.asn, action="add") for e in entries],
    )


async def parameters_for(session: AsyncSession, since: int) -> ParametersResponse:
    current = await repository.current_version(session)
    if 0 < since <= current:
        changes = await repository.changes_since(session, since, MAX_DELTA + 1)
        if len(changes) <= MAX_DELTA:
            return ParametersResponse(
                version=current,
                mode="delta",
                entries=[
                    ParameterItem(
                        version=c.version,
                        table=c.table_name,
                        key=c.key,
                        action="set" if c.action == "set" else "delete",
                        value=c.value,
                    )
                    for c in changes
                ],
            )
    entries = await repository.all_entries(session)
    return ParametersResponse(
        version=current,
        mode="full",
        entries=[
            ParameterItem(
                version=e.version, table=e.table_name, key=e.key, action="set", value=e.value
            )
            for e in entries
        ],
    )


def _check(table: str, key: str) -> ParameterTable:
    try:
        parsed = ParameterTable(table)
    except ValueError:
        raise ValidationFailed(f"unknown parameter table {table!r}") from None
    if not _KEY.match(key):
        raise ValidationFailed("a parameter key is 1-32 of 0-9 A-Z a-z : _ -")
    return parsed


async def set_parameter(
    session: AsyncSession, table: str, key: str, value: dict[str, int], *, actor: str
) -> int:
    """Set one entry (integers only: fen, percent, minutes); returns the new list version."""
    parsed = _check(table, key)
    if not value or any(
        not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in value.values()
    ):
        raise ValidationFailed("a parameter value is a non-empty object of non-negative integers")
    if parsed is ParameterTable.concessions and not 0 <= value.get("percent", -1) <= 100:
        raise ValidationFailed("a concession needs 'percent' (share of the fare paid) in 0..100")
    version = await repository.current_version(session) + 1
    await repository.add_change(
        session,
        ParameterChange(
            version=version, table_name=table, key=key, action="set", value=value, actor=actor
        ),
    )
    entry = await repository.get_entry(session, table, key)
    if entry is None:
        await repository.add_entry(
            session, ParameterEntry(table_name=table, key=key, value=dict(value), version=version)
        )
    else:
        entry.value, entry.version = dict(value), version
    return version


async def delete_parameter(session: AsyncSession, table: str, key: str, *, actor: str) -> int:
    _check(table, key)
    if await repository.get_entry(session, table, key) is None:
        raise NotFound(f"no parameter {table}/{key}")
    version = await repository.current_version(session) + 1
    await repository.add_change(
        session,
        ParameterChange(
            version=version, table_name=table, key=key, action="delete", value=None, actor=actor
        ),
    )
    await repository.delete_entry(session, table, key)
    return version


async def report_versions(
    session: AsyncSession,
    terminal_id: int,
    blacklist_version: int,
    params_version: int,
    now: datetime | None = None,
) -> None:
    await registry.record_versions(
        session, terminal_id, blacklist_version, params_version, now or clock.now()
    )
