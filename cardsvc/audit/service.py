"""Audit trail rules: append, seal in the HSM, verify (docs/architecture.md §11, "The audit
trail").

An entry is written in the writer's own transaction with no number and no MAC: an insert, which
locks nothing another writer needs. After commit it is *sealed*, in batches: the sealer numbers
the oldest unsealed entries (a short transaction), the HSM chains them onto the head it anchored
(``AUDIT_CHECKPOINT``: MAC_n = HMAC(audit key, n ‖ MAC_n-1 ‖ SHA-256 of entry n)) and appends the
new head to its own hash-chained log, and a second short transaction stores the MACs. The HSM
only ever extends its own head, so no one holding the database alone can rewrite, remove or
reorder a sealed entry and make the chain prove out again: a changed entry fails its MAC, and a
removed last entry leaves the trail short of the head the HSM anchored.

Values pass through the log masking (resident IDs and card numbers are masked); callers never pass
names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.audit import repository
from cardsvc.audit.repository import ChainEntry
from cardsvc.db import unit_of_work
from cardsvc.hsm import AuditAnchor, HsmAuditConflict, HsmClient
from cardsvc.logging import get_logger, mask_text

log = get_logger(__name__)

# The HSM key of the trail (usage ``audit-mac``); its label also names the chain in the HSM.
AUDIT_KEY: Final = "AUDIT_MAC"
# Entries sealed or verified per HSM command.
BATCH: Final = 1000
# Set on a session that recorded an entry, so that its committer can wake the sealer.
RECORDED: Final = "cardsvc.audit.recorded"


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


def entry_digest(entry: ChainEntry) -> bytes:
    """SHA-256 of what an entry says (its number is bound by the MAC): what the HSM chains."""
    body = json.dumps(
        [
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
    return hashlib.sha256(body.encode()).digest()


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
    """Append one entry (the caller's unit of work commits; the sealer seals it after)."""
    await repository.add(
        session,
        {
            "at": clock.now(),
            "actor": actor,
            "action": action,
            "entity": entity,
            "entity_id": mask_text(entity_id),
            "before": _canonical(before),
            "after": _canonical(after),
        },
    )
    session.info[RECORDED] = True


def _anchor(seq: int, mac_hex: str) -> AuditAnchor:
    return AuditAnchor(seq, bytes.fromhex(mac_hex))


async def seal(sessions: async_sessionmaker[AsyncSession], hsm: HsmClient) -> int:
    """Seal every entry committed so far, a batch at a time; the number sealed. No transaction is
    open while the HSM works. Several sealers may run at once (API workers, a command): they
    take turns on the head row, and one that finds a batch numbered but not sealed (another
    sealer's, or one that crashed) seals that batch first, which the HSM answers with the same
    MACs."""
    sealed = 0
    while True:
        async with unit_of_work(sessions) as session:
            head = await repository.lock_head(session)
            prev = _anchor(head.seq, head.mac)
            batch = await repository.chain_after(session, head.seq, BATCH)
            claimed = not batch
            if claimed:
                batch = await repository.claim(session, head.seq, BATCH)
        if not batch:
            return sealed
        answer = await hsm.audit_checkpoint(AUDIT_KEY, prev, [entry_digest(r) for r in batch])
        async with unit_of_work(sessions) as session:
            head = await repository.lock_head(session)
            if head.seq == prev.seq:  # else another sealer stored this very batch first
                await repository.store_macs(
                    session, ((r.id, mac.hex()) for r, mac in zip(batch, answer.macs, strict=True))
                )
                head.seq, head.mac = batch[-1].seq, answer.macs[-1].hex()
        sealed += len(batch)
        if claimed and len(batch) < BATCH:
            # Every entry committed before this batch was claimed is in it: nothing is left of
            # what was committed before the call (what came after wakes the sealer again).
            return sealed


async def has_unsealed(reads: async_sessionmaker[AsyncSession]) -> bool:
    async with reads() as session:
        return await repository.has_unsealed(session)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int  # sealed entries that proved out
    head_mac: str  # the MAC of the last of them
    anchored_seq: int  # the last entry the HSM anchored
    pending: int = 0  # entries not sealed yet
    first_bad_seq: int | None = None
    problem: str | None = None


@dataclass(frozen=True)
class _Walk:
    last: AuditAnchor  # the last entry that proved out
    bad_seq: int | None = None  # the first that did not, and what is wrong with it
    problem: str | None = None
    in_flight: bool = False  # the walk ended at a numbered batch still being sealed


async def _walk(reads: async_sessionmaker[AsyncSession], hsm: HsmClient) -> _Walk:
    """Prove the sealed chain from its start, a batch per HSM command."""
    prev = AuditAnchor.genesis()
    while True:
        async with reads() as session:
            rows = await repository.chain_after(session, prev.seq, BATCH)
        sealed: list[tuple[bytes, AuditAnchor]] = []  # (digest, the entry as a link)
        stop: _Walk | None = None  # what ends the walk after this batch proves out
        for expected, row in enumerate(rows, start=prev.seq + 1):
            mac = _mac_bytes(row.mac) if row.mac is not None else None
            if row.seq != expected:
                stop = _Walk(prev, expected, f"entry {expected} is missing")
            elif row.mac is None:
                stop = _Walk(prev, in_flight=True)
            elif mac is None:
                stop = _Walk(prev, row.seq, "the entry's MAC is not 32 bytes of hex")
            else:
                sealed.append((entry_digest(row), AuditAnchor(row.seq, mac)))
                continue
            break
        if sealed:
            proof = await hsm.audit_verify(
                AUDIT_KEY, prev, [(digest, link.mac) for digest, link in sealed]
            )
            if proof.valid < len(sealed):
                good = sealed[proof.valid - 1][1] if proof.valid else prev
                bad = sealed[proof.valid][1].seq
                return _Walk(good, bad, "the entry does not match its MAC (changed?)")
            prev = sealed[-1][1]
        if stop is not None:
            return dataclasses.replace(stop, last=prev)
        if len(rows) < BATCH:
            return _Walk(prev)


def _mac_bytes(text: str) -> bytes | None:
    try:
        mac = bytes.fromhex(text)
    except ValueError:
        return None
    return mac if len(mac) == 32 else None


async def verify(
    sessions: async_sessionmaker[AsyncSession],
    reads: async_sessionmaker[AsyncSession],
    hsm: HsmClient,
) -> VerifyResult:
    """Seal what is pending, then prove every sealed entry's MAC with the HSM, in order, and
    compare the end of the trail with the head the HSM anchored (read before and after the walk,
    so that sealing meanwhile is no false alarm)."""
    for attempt in range(2):
        try:
            await seal(sessions, hsm)
        except HsmAuditConflict as exc:
            log.warning("audit.seal_refused", reason=exc.message)  # the walk says where
        before = (await hsm.audit_verify(AUDIT_KEY, AuditAnchor.genesis(), [])).anchor
        walk = await _walk(reads, hsm)
        # A batch another sealer numbered and the HSM anchored, not stored yet: seal it, again.
        if not (walk.in_flight and walk.last.seq < before.seq and attempt == 0):
            break
    last, bad_seq, problem = walk.last, walk.bad_seq, walk.problem
    after = (await hsm.audit_verify(AUDIT_KEY, last, [])).anchor
    async with reads() as session:
        pending = await repository.count_unsealed(session)
    if problem is None and last.seq < before.seq:
        bad_seq = last.seq + 1
        problem = (
            f"the HSM anchored entry {before.seq} but the trail ends at entry {last.seq} "
            "(entries removed?)"
        )
    elif problem is None and last.seq > after.seq:
        bad_seq = after.seq + 1
        problem = f"entries after {after.seq} are not anchored in the HSM"
    elif problem is None and last.seq == after.seq and last.mac != after.mac:
        bad_seq = last.seq
        problem = "the last entry is not the one the HSM anchored"
    return VerifyResult(
        ok=problem is None,
        entries=last.seq,
        head_mac=last.mac.hex(),
        anchored_seq=after.seq,
        pending=pending,
        first_bad_seq=bad_seq,
        problem=problem,
    )
