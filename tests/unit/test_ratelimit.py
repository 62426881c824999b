"""Rate-limit windows and the lockout store on fakeredis (real Redis: tests/integration).

When to lock and for how long is tested with the domain (tests/unit/test_logins.py)."""

from __future__ import annotations

import fakeredis

from gateway.ratelimit import Lockout, RateLimiter, Rule


def test_rule_parsing():
    assert Rule.parse("30/60") == Rule(limit=30, window_seconds=60)


def test_fixed_window_allows_the_limit_then_refuses_with_retry_after():
    limiter = RateLimiter(fakeredis.FakeRedis(), prefix="t:")
    rule = Rule(limit=3, window_seconds=60)
    decisions = [limiter.hit("login-ip", "10.1.2.3", rule) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert 0 < decisions[-1].retry_after <= 60
    assert limiter.hit("login-ip", "10.1.2.4", rule).allowed  # per subject


def test_keys_do_not_contain_the_subject_in_clear():
    client = fakeredis.FakeRedis()
    RateLimiter(client, prefix="t:").hit("login-account", "ada@example.com", Rule(1, 60))
    assert all(b"ada" not in key for key in client.keys("*"))


def test_lockout_store_counts_per_pair_locks_and_resets():
    client = fakeredis.FakeRedis()
    store = Lockout(client, prefix="t:")
    pair = ("ada@example.com", "1.2.3.4")
    assert [store.add_failure(*pair) for _ in range(3)] == [1, 2, 3]
    assert store.add_lockout(*pair) == 1
    assert store.add_failure(*pair) == 1  # a lockout starts the failure count again
    assert store.add_lockout(*pair) == 2
    assert store.locked_for(*pair) == 0
    assert store.lock(*pair, 25)
    assert 0 < store.locked_for(*pair) <= 25
    assert store.locked_for("ada@example.com", "5.6.7.8") == 0  # other clients unaffected
    assert all(0 < client.ttl(key) <= 24 * 3600 for key in client.keys("t:lockout:*"))
    store.reset(*pair)
    assert store.add_failure(*pair) == 1 and store.add_lockout(*pair) == 1


def test_redis_down_fails_open(dead_redis):
    assert RateLimiter(dead_redis, prefix="t:").hit("b", "s", Rule(1, 60)).allowed
    store = Lockout(dead_redis, prefix="t:")
    assert store.add_failure("a", "b") == 0 and store.add_lockout("a", "b") == 0
    assert store.locked_for("a", "b") == 0 and not store.lock("a", "b", 1)
    store.reset("a", "b")


def test_async_counters_share_one_window_and_restart_after_it():
    import asyncio

    from gateway.ratelimit import AsyncRateLimiter

    async def run():
        client = fakeredis.FakeAsyncRedis()
        limiter = AsyncRateLimiter(client, prefix="t:")
        first = await limiter.count_many([("money", "u1", 60), ("velocity", "u1", 86400)])
        second = await limiter.count_many([("money", "u1", 60), ("velocity", "u1", 86400)])
        other = await limiter.count_many([("money", "u2", 60)])
        assert [c for c, _ in first] == [1, 1] and [c for c, _ in second] == [2, 2]
        assert 0 < second[0][1] <= 60_000 and 60_000 < second[1][1] <= 86_400_000
        assert other[0][0] == 1
        for key in await client.keys("t:rl:money:*"):
            await client.pexpire(key, 1)
        await asyncio.sleep(0.01)
        assert (await limiter.count_many([("money", "u1", 60)]))[0][0] == 1  # a new window

    asyncio.run(run())
