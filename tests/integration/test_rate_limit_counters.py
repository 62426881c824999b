"""The money routes' counters and token cutoff on the real Redis: one script call per
request (gateway/ratelimit.py `AsyncRateLimiter`)."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from gateway.ratelimit import AsyncRateLimiter, cutoff_key

T = TypeVar("T")


def _with_limiter(url: str, body: Callable[[AsyncRateLimiter, Any, str], Awaitable[T]]) -> T:
    async def run() -> T:
        client = aioredis.Redis.from_url(url)
        prefix = f"settle-test-rl-{secrets.token_hex(4)}:"
        try:
            return await body(AsyncRateLimiter(client, prefix=prefix), client, prefix)
        finally:
            async for key in client.scan_iter(match=f"{prefix}*"):
                await client.delete(key)
            await client.aclose()

    return asyncio.run(run())


def test_counters_count_per_subject_in_their_own_windows_and_read_the_cutoff(settings):
    user = uuid.uuid4()

    async def body(limiter: AsyncRateLimiter, client: Any, prefix: str) -> None:
        hits = [("money-user", str(user), 60), ("velocity", str(user), 86_400)]
        first, none = await limiter.count_many_and_cutoff(hits, cutoff_of=user)
        assert [count for count, _ in first] == [1, 1] and none is None
        await client.set(cutoff_key(prefix, user), repr(1_700_000_000.5))
        second, cutoff = await limiter.count_many_and_cutoff(hits, cutoff_of=user)
        assert [count for count, _ in second] == [2, 2] and cutoff == 1_700_000_000.5
        assert 0 < second[0][1] <= 60_000 < second[1][1] <= 86_400_000
        other = await limiter.count_many([("money-user", str(uuid.uuid4()), 60)])
        assert other[0][0] == 1
        # Without a cutoff asked for, the counts alone.
        assert (await limiter.count_many(hits))[0][0] == 3

    _with_limiter(settings.redis_url, body)


def test_a_window_that_ran_out_starts_again(settings):
    async def body(limiter: AsyncRateLimiter, client: Any, prefix: str) -> None:
        assert (await limiter.count_many([("money-user", "u1", 60)]))[0][0] == 1
        async for key in client.scan_iter(match=f"{prefix}rl:money-user:*"):
            await client.pexpire(key, 1)
        await asyncio.sleep(0.02)
        assert (await limiter.count_many([("money-user", "u1", 60)]))[0][0] == 1

    _with_limiter(settings.redis_url, body)


def test_the_counters_survive_a_script_cache_flush(settings):
    """Redis restarted (or SCRIPT FLUSH): redis-py loads the script again."""

    async def body(limiter: AsyncRateLimiter, client: Any, prefix: str) -> None:
        assert (await limiter.count_many([("money-user", "u1", 60)]))[0][0] == 1
        await client.script_flush()
        assert (await limiter.count_many([("money-user", "u1", 60)]))[0][0] == 2

    _with_limiter(settings.redis_url, body)


def test_redis_down_fails_open_with_zero_counts_and_no_cutoff():
    async def run() -> tuple[list[tuple[int, int]], float | None]:
        client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
        try:
            limiter = AsyncRateLimiter(client, prefix="t:")
            return await limiter.count_many_and_cutoff(
                [("money-user", "u1", 60), ("velocity", "u1", 60)], cutoff_of=uuid.uuid4()
            )
        finally:
            await client.aclose()

    assert asyncio.run(run()) == ([(0, 0), (0, 0)], None)
