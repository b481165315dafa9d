"""One contract suite over both cache implementations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cardsvc.cache import Cache, LockTimeout
from tests.conftest import CACHES, _open_cache


@pytest.fixture(params=CACHES)
async def any_cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    cache = await _open_cache(request.param)
    yield cache
    await cache.close()


async def test_get_set_delete(any_cache: Cache) -> None:
    assert await any_cache.get("k") is None
    await any_cache.set("k", b"v")
    assert await any_cache.get("k") == b"v"
    await any_cache.delete("k")
    assert await any_cache.get("k") is None


async def test_ttl_expires(any_cache: Cache) -> None:
    await any_cache.set("short", b"1", ttl=0.05)
    assert await any_cache.get("short") == b"1"
    await asyncio.sleep(0.12)
    assert await any_cache.get("short") is None


async def test_set_if_absent(any_cache: Cache) -> None:
    assert await any_cache.set_if_absent("once", b"a", ttl=5)
    assert not await any_cache.set_if_absent("once", b"b", ttl=5)
    assert await any_cache.get("once") == b"a"


async def test_counters(any_cache: Cache) -> None:
    assert await any_cache.incr("n") == 1
    assert await any_cache.incr("n", 5) == 6
    assert await any_cache.incr("n", -2) == 4


async def test_counter_ttl_is_set_once(any_cache: Cache) -> None:
    assert await any_cache.incr("rate", ttl=0.1) == 1
    assert await any_cache.incr("rate", ttl=10) == 2
    await asyncio.sleep(0.15)
    assert await any_cache.incr("rate", ttl=0.1) == 1


async def test_sets(any_cache: Cache) -> None:
    assert await any_cache.sadd("s", "a", "b") == 2
    assert await any_cache.sadd("s", "b", "c") == 1
    assert await any_cache.sismember("s", "a")
    assert not await any_cache.sismember("s", "z")
    assert await any_cache.srem("s", "a", "z") == 1
    assert await any_cache.smembers("s") == {"b", "c"}


async def test_lock_excludes_and_times_out(any_cache: Cache) -> None:
    async with any_cache.lock("L", timeout=5):
        with pytest.raises(LockTimeout):
            async with any_cache.lock("L", timeout=5, blocking_timeout=0.05):
                pass
    async with any_cache.lock("L", timeout=5, blocking_timeout=0.5):
        pass


async def test_lock_expires_when_holder_dies(any_cache: Cache) -> None:
    holder = any_cache.lock("dead", timeout=0.1)
    await holder.__aenter__()  # never released, as if the process died
    async with any_cache.lock("dead", timeout=5, blocking_timeout=1.0):
        pass


async def test_lock_serializes_critical_sections(any_cache: Cache) -> None:
    inside = 0
    peak = 0

    async def worker() -> None:
        nonlocal inside, peak
        async with any_cache.lock("crit", timeout=5, blocking_timeout=5):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(worker() for _ in range(8)))
    assert peak == 1
