"""Rate-limit windows and lockout growth on fakeredis (real Redis: tests/integration)."""

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


def test_lockout_grows_and_is_capped_and_success_resets():
    client = fakeredis.FakeRedis()
    lockout = Lockout(client, prefix="t:", threshold=3, base_seconds=10, max_seconds=25)
    imposed = [lockout.record_failure("ada@example.com", "1.2.3.4") for _ in range(9)]
    assert imposed == [0, 0, 10, 0, 0, 20, 0, 0, 25]  # doubles, then the cap
    assert 0 < lockout.locked_for("ada@example.com", "1.2.3.4") <= 25
    assert lockout.locked_for("ada@example.com", "5.6.7.8") == 0  # other clients unaffected
    lockout.record_success("ada@example.com", "1.2.3.4")
    assert lockout.record_failure("ada@example.com", "1.2.3.4") == 0


def test_redis_down_fails_open(dead_redis):
    assert RateLimiter(dead_redis, prefix="t:").hit("b", "s", Rule(1, 60)).allowed
    lockout = Lockout(dead_redis, prefix="t:", threshold=1, base_seconds=1, max_seconds=1)
    assert lockout.record_failure("a", "b") == 0 and lockout.locked_for("a", "b") == 0
