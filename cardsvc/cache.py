"""Cache, counters, sets and locks: one small interface, a Redis and an in-process implementation.

The database stays the source of truth; the cache only speeds things up and coordinates, so
losing it loses no data (DESIGN §4). ``connect_cache(None)`` gives the in-process implementation.
"""

from __future__ import annotations

import asyncio
import builtins
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import redis.asyncio as aioredis
import redis.exceptions

# What a cache call raises when Redis is unreachable (the in-process cache never does): the
# callers that may go on without the cache catch these and say so (docs/architecture.md §11).
CACHE_DOWN: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class LockTimeout(Exception):
    """The lock could not be acquired within the blocking timeout."""


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...
    async def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> bool: ...
    async def delete(self, key: str) -> None: ...
    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int: ...
    async def sadd(self, key: str, *members: str) -> int: ...
    async def srem(self, key: str, *members: str) -> int: ...
    async def sismember(self, key: str, member: str) -> bool: ...
    async def smembers(self, key: str) -> builtins.set[str]: ...
    def lock(
        self, name: str, timeout: float, blocking_timeout: float | None = None
    ) -> AbstractAsyncContextManager[None]: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


class MemoryCache:
    """In-process implementation for the embedded default and single-process tests."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._sets: dict[str, set[str]] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._lock_changed = asyncio.Condition()

    @staticmethod
    def _deadline(ttl: float | None) -> float | None:
        return None if ttl is None else time.monotonic() + ttl

    def _live(self, key: str) -> bytes | None:
        item = self._values.get(key)
        if item is None:
            return None
        value, deadline = item
        if deadline is not None and deadline <= time.monotonic():
            del self._values[key]
            return None
        return value

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._values[key] = (value, self._deadline(ttl))

    async def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        if self._live(key) is not None:
            return False
        self._values[key] = (value, self._deadline(ttl))
        return True

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)
        self._sets.pop(key, None)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        current = self._live(key)
        value = int(current or b"0") + amount
        deadline = self._values[key][1] if current is not None else self._deadline(ttl)
        self._values[key] = (str(value).encode(), deadline)
        return value

    async def sadd(self, key: str, *members: str) -> int:
        target = self._sets.setdefault(key, set())
        before = len(target)
        target.update(members)
        return len(target) - before

    async def srem(self, key: str, *members: str) -> int:
        target = self._sets.get(key, set())
        removed = len(target & set(members))
        target.difference_update(members)
        return removed

    async def sismember(self, key: str, member: str) -> bool:
        return member in self._sets.get(key, set())

    async def smembers(self, key: str) -> builtins.set[str]:
        return set(self._sets.get(key, set()))

    @asynccontextmanager
    async def lock(
        self,
        name: str,
        timeout: float,  # noqa: ASYNC109 - the lock's lease, not a call timeout
        blocking_timeout: float | None = None,
    ) -> AsyncIterator[None]:
        token = secrets.token_hex(8)
        give_up = None if blocking_timeout is None else time.monotonic() + blocking_timeout
        async with self._lock_changed:
            while True:
                holder = self._locks.get(name)
                now = time.monotonic()
                if holder is None or holder[1] <= now:
                    self._locks[name] = (token, now + timeout)
                    break
                wait = holder[1] - now
                if give_up is not None:
                    if now >= give_up:
                        raise LockTimeout(name)
                    wait = min(wait, give_up - now)
                try:
                    await asyncio.wait_for(self._lock_changed.wait(), timeout=wait)
                except TimeoutError:
                    continue
        try:
            yield
        finally:
            async with self._lock_changed:
                if self._locks.get(name, ("", 0.0))[0] == token:
                    del self._locks[name]
                self._lock_changed.notify_all()

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


# Release only a lock we still hold: compare the token, then delete, atomically in Redis.
_RELEASE_LOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


class RedisCache:
    def __init__(self, client: aioredis.Redis, prefix: str = "cardsvc:") -> None:
        self._redis = client
        self._prefix = prefix

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "cardsvc:", *, password: str | None = None
    ) -> RedisCache:
        client = aioredis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, password=password
        )
        return cls(client, prefix)

    def _k(self, key: str) -> str:
        return self._prefix + key

    @staticmethod
    def _ms(ttl: float | None) -> int | None:
        return None if ttl is None else max(1, int(ttl * 1000))

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(self._k(key))
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._redis.set(self._k(key), value, px=self._ms(ttl))

    async def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        return bool(await self._redis.set(self._k(key), value, px=self._ms(ttl), nx=True))

    async def delete(self, key: str) -> None:
        await self._redis.delete(self._k(key))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(self._k(key), amount)
            if ttl is not None:
                pipe.pexpire(self._k(key), self._ms(ttl) or 1, nx=True)
            results = await pipe.execute()
        return int(results[0])

    async def sadd(self, key: str, *members: str) -> int:
        return int(await self._redis.sadd(self._k(key), *members)) if members else 0

    async def srem(self, key: str, *members: str) -> int:
        return int(await self._redis.srem(self._k(key), *members)) if members else 0

    async def sismember(self, key: str, member: str) -> bool:
        return bool(await self._redis.sismember(self._k(key), member))

    async def smembers(self, key: str) -> builtins.set[str]:
        members = await self._redis.smembers(self._k(key))
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}

    @asynccontextmanager
    async def lock(
        self,
        name: str,
        timeout: float,  # noqa: ASYNC109 - the lock's lease, not a call timeout
        blocking_timeout: float | None = None,
    ) -> AsyncIterator[None]:
        key = self._k("lock:" + name)
        token = secrets.token_hex(16)
        give_up = None if blocking_timeout is None else time.monotonic() + blocking_timeout
        delay = 0.005
        while not await self._redis.set(key, token, px=self._ms(timeout), nx=True):
            if give_up is not None and time.monotonic() >= give_up:
                raise LockTimeout(name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            await self._redis.eval(_RELEASE_LOCK, 1, key, token)

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()


def connect_cache(
    redis_url: str | None, prefix: str = "cardsvc:", *, password: str | None = None
) -> Cache:
    if redis_url:
        return RedisCache.from_url(redis_url, prefix, password=password)
    return MemoryCache()
