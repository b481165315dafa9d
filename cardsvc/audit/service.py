"""Audit trail rules: hash-chained append and verification.

Each entry's hash is SHA-256 over the previous hash and a canonical JSON of the entry
(seq, time, actor, action, entity, id, before, after), so an edited, removed or reordered entry
breaks every later link. Values pass through the log masking (resident IDs and card numbers are
masked); callers never pass names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum

from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.audit import repository
from cardsvc.audit.models import AuditEntry
from cardsvc.logging import mask_text


def _clean(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    if isinstance(value, Enum):
        return _clean(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask_text(str(value))


def _canonical(value: Mapping[str, object] | None) -> str | None:
    if value is None:
        return None
    return json.dumps(_clean(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(entry: AuditEntry) -> str:
    """The hash of one entry, chained to ``entry.prev_hash``: what ``record`` stores and ``verify``
    recomputes."""
    body = json.dumps(
        [
            entry.seq,
            entry.at.isoformat(timespec="microseconds"),
            entry.actor,
            entry.action,
            entry.entity,
            entry.entity_id,
            entry.before,
            entry.after,
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(f"{entry.prev_hash}|{body}".encode()).hexdigest()


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: str,
    before: Mapping[str, object] | None = None,
    after: Mapping[str, object] | None = None,
) -> None:
    """Append one entry to the chain (flushes; the caller's unit of work commits)."""
    head = await repository.lock_head(session)
    entry = AuditEntry(
        seq=head.seq + 1,
        at=clock.now(),
        actor=actor,
        action=action,
        entity=entity,
        entity_id=mask_text(entity_id),
        before=_canonical(before),
        after=_canonical(after),
        prev_hash=head.hash,
    )
    entry.hash = entry_hash(entry)
    await repository.add(session, entry)
    head.seq = entry.seq
    head.hash = entry.hash
    await session.flush()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None


async def verify(session: AsyncSession) -> VerifyResult:
    """Recompute the whole chain; report the first entry that does not prove out."""
    prev = repository.GENESIS_HASH
    expected_seq = 1
    count = 0
    async for entry in repository.iterate(session):
        if entry.seq != expected_seq:
            return VerifyResult(
                False, count, prev, entry.seq, f"sequence gap: expected {expected_seq}"
            )
        if entry.prev_hash != prev:
            return VerifyResult(False, count, prev, entry.seq, "previous-hash link broken")
        digest = entry_hash(entry)  # chained to entry.prev_hash, which is prev (checked above)
        if digest != entry.hash:
            return VerifyResult(
                False, count, prev, entry.seq, "entry content does not match its hash"
            )
        prev = digest
        expected_seq += 1
        count += 1
    head = await repository.get_head(session)
    head_seq, head_hash = (head.seq, head.hash) if head else (0, repository.GENESIS_HASH)
    if head_seq != count or head_hash != prev:
        return VerifyResult(
            False, count, prev, head_seq, "chain head does not match the last entry (truncated?)"
        )
    return VerifyResult(True, count, prev)
