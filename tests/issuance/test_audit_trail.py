"""The audit trail is keyed and anchored by the HSM: entries are sealed after their commit, in
batches; someone holding the database alone can neither change an entry and recompute the chain
nor remove the last entry and fix the head, and cannot make the HSM seal a rewritten history."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc.app import create_app
from cardsvc.audit import repository, service
from cardsvc.audit.models import AuditEntry, AuditHead
from cardsvc.db import read_sessions, unit_of_work
from cardsvc.hsm import AuditAnchor, HsmAuditConflict
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from tests.factories import resident_id, staff_headers
from tests.issuance.flow import register_and_apply


async def verify(resources: Resources) -> service.VerifyResult:
    return await service.verify(resources.sessions, read_sessions(resources.engine), resources.hsm)


async def record(resources: Resources, n: int, actor: str = "op") -> None:
    async with unit_of_work(resources.sessions) as session:
        for i in range(n):
            await service.record(
                session, actor=actor, action="test.step", entity="test", entity_id=str(i)
            )


async def entries(resources: Resources) -> list[AuditEntry]:
    async with resources.sessions() as session:
        rows = await session.execute(select(AuditEntry).order_by(AuditEntry.id))
        return list(rows.scalars())


async def approval(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
) -> int:
    """A resident, an application and its approval through the API; the approval's entry seq."""
    await register_and_apply(client, operator, supervisor, resident_id=resident_id(), name="赵六")
    sealed = await service.seal(resources.sessions, resources.hsm)
    found = [e for e in await entries(resources) if e.action == "application.approve"]
    assert sealed >= 4
    assert len(found) == 1
    assert found[0].actor == "supervisor"
    assert found[0].seq is not None
    return found[0].seq


async def test_entries_are_written_unsealed_and_sealed_in_order(resources: Resources) -> None:
    await record(resources, 3)
    written = await entries(resources)
    assert [(e.seq, e.mac) for e in written] == [(None, None)] * 3
    assert (await verify(resources)).ok  # verify seals what is pending first
    sealed = await entries(resources)
    assert [e.seq for e in sealed] == [1, 2, 3]
    assert all(e.mac is not None and len(e.mac) == 64 for e in sealed)
    await record(resources, 2)
    result = await verify(resources)
    assert (result.ok, result.entries, result.anchored_seq, result.pending) == (True, 5, 5, 0)
    async with resources.sessions() as session:
        head = await repository.get_head(session)
        assert head is not None
        assert (head.seq, head.mac) == (5, result.head_mac)


async def test_a_changed_approver_with_a_recomputed_chain_is_detected(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
) -> None:
    seq = await approval(client, resources, operator, supervisor)
    assert (await verify(resources)).ok
    # The attacker changes who approved, then recomputes every MAC from that entry on with the
    # best key they have (none: an unkeyed chain, as the trail used to be) and fixes the head.
    async with unit_of_work(resources.sessions) as session:
        await session.execute(
            update(AuditEntry).where(AuditEntry.seq == seq).values(actor="mallory")
        )
        rows = await repository.chain_after(session, 0, 1000)
        mac = bytes(32)
        for row in rows:
            mac = hashlib.sha256(mac + service.entry_digest(row)).digest()
            if row.seq >= seq:
                await session.execute(
                    update(AuditEntry).where(AuditEntry.id == row.id).values(mac=mac.hex())
                )
        await session.execute(update(AuditHead).values(mac=mac.hex()))
    result = await verify(resources)
    assert not result.ok
    assert result.first_bad_seq == seq
    assert result.problem is not None
    assert "does not match its MAC" in result.problem


async def test_a_deleted_last_entry_with_a_fixed_head_is_detected(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
) -> None:
    await approval(client, resources, operator, supervisor)
    before = await verify(resources)
    assert before.ok
    last = before.entries
    async with unit_of_work(resources.sessions) as session:
        kept = (await repository.chain_after(session, last - 2, 1))[0]
        await session.execute(text("DELETE FROM audit_entries WHERE seq = :s"), {"s": last})
        await session.execute(update(AuditHead).values(seq=last - 1, mac=kept.mac))
    result = await verify(resources)
    assert not result.ok
    assert (result.entries, result.anchored_seq, result.first_bad_seq) == (last - 1, last, last)
    assert result.problem is not None
    assert "entries removed" in result.problem


async def test_a_deleted_middle_entry_is_detected(resources: Resources) -> None:
    await record(resources, 4)
    assert (await verify(resources)).ok
    async with unit_of_work(resources.sessions) as session:
        await session.execute(text("DELETE FROM audit_entries WHERE seq = 2"))
    result = await verify(resources)
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 2, 1)


async def test_the_hsm_refuses_to_seal_a_rewritten_history(resources: Resources) -> None:
    """Even with the service's own HSM access, history cannot be sealed again: the HSM chains
    only onto the head it anchored."""
    await record(resources, 3)
    await service.seal(resources.sessions, resources.hsm)
    async with unit_of_work(resources.sessions) as session:
        await session.execute(update(AuditEntry).values(seq=None, mac=None))
        await session.execute(update(AuditEntry).where(AuditEntry.id == 2).values(actor="mallory"))
        await session.execute(update(AuditHead).values(seq=0, mac="0" * 64))
    with pytest.raises(HsmAuditConflict):
        await service.seal(resources.sessions, resources.hsm)
    result = await verify(resources)
    assert not result.ok
    assert result.anchored_seq == 3
    assert result.entries == 0


async def test_a_sealer_that_stopped_after_the_hsm_is_completed_by_the_next(
    resources: Resources,
) -> None:
    await record(resources, 3)
    hsm = resources.hsm
    calls = 0

    class Crashing:
        """The HSM answers, then the sealer dies before it stores the MACs."""

        def __getattr__(self, name: str) -> object:
            return getattr(hsm, name)

        async def audit_checkpoint(self, *args: object) -> object:
            nonlocal calls
            calls += 1
            await hsm.audit_checkpoint(*args)  # type: ignore[arg-type]
            raise ConnectionResetError("the sealer's process ended here")

    with pytest.raises(ConnectionResetError):
        await service.seal(resources.sessions, Crashing())  # type: ignore[arg-type]
    assert calls == 1
    numbered = await entries(resources)
    assert [(e.seq, e.mac) for e in numbered] == [(1, None), (2, None), (3, None)]
    await record(resources, 1)  # written meanwhile: sealed after the interrupted batch
    assert await service.seal(resources.sessions, resources.hsm) == 4
    result = await verify(resources)
    assert (result.ok, result.entries, result.anchored_seq) == (True, 4, 4)


@pytest.mark.postgres
async def test_concurrent_writers_and_sealers(resources: Resources) -> None:
    """Writers take no lock on a head row; sealers running at once agree on one chain."""
    writers = [record(resources, 5, actor=f"w{n}") for n in range(8)]
    sealers = [service.seal(resources.sessions, resources.hsm) for _ in range(3)]
    outcome = await asyncio.gather(*writers, *sealers, return_exceptions=True)
    assert not [o for o in outcome if isinstance(o, BaseException)]
    await service.seal(resources.sessions, resources.hsm)
    result = await verify(resources)
    assert (result.ok, result.entries, result.pending) == (True, 40, 0)


@pytest.mark.settings(audit_seal_interval_seconds=3600)
async def test_the_api_seals_after_commit(resources: Resources) -> None:
    """With the app running (its lifespan), a request that wrote an entry wakes the sealer once
    it has committed (the interval is an hour: only the wake-up can seal it this soon)."""
    app = create_app(resources.settings, resources)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
            operator = await staff_headers(api, "op", Role.counter_operator)
            await until(lambda: pending(read_sessions(resources.engine)), 1)  # staff.create
            await asyncio.sleep(0.2)  # the sealer is asleep and stays so
            assert await pending(read_sessions(resources.engine)) == 1
            body = {
                "resident_id": resident_id(),
                "name": "钱七",
                "phone": "13800000000",
                "address": "x",
            }
            assert (await api.post("/api/v1/residents", json=body, headers=operator)).is_success
            await until(lambda: pending(read_sessions(resources.engine)), 0)
    sealed = await entries(resources)
    assert [e.seq for e in sealed] == [1, 2]
    proof = await resources.hsm.audit_verify(service.AUDIT_KEY, AuditAnchor.genesis(), [])
    assert proof.anchor.seq == 2


async def pending(reads: async_sessionmaker[AsyncSession]) -> int:
    async with reads() as session:
        return await repository.count_unsealed(session)


async def until(probe: Callable[[], Awaitable[int]], value: int, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.05)):
        if await probe() == value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still {await probe()}, not {value}")
