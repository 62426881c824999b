"""The poison-message guard's counting, on fakeredis (a real-Redis run is in the bank test)."""

from __future__ import annotations

import fakeredis

from workers.delivery_guard import DeliveryGuard


def test_admits_up_to_the_limit_then_drops():
    client = fakeredis.FakeRedis()
    guard = DeliveryGuard(client, prefix="p:", max_deliveries=3, ttl_seconds=60)
    assert [guard.admit("t1") for _ in range(5)] == [True, True, True, False, False]
    assert guard.admit("t2") is True  # counted per message
    assert 0 < client.ttl("p:deliveries:t1") <= 60


def test_forget_resets_the_count():
    client = fakeredis.FakeRedis()
    guard = DeliveryGuard(client, prefix="p:", max_deliveries=1, ttl_seconds=60)
    assert guard.admit("t") is True
    guard.forget("t")
    assert guard.admit("t") is True


def test_redis_down_admits_rather_than_blocking_work(dead_redis):
    guard = DeliveryGuard(dead_redis, prefix="p:", max_deliveries=1, ttl_seconds=60)
    assert guard.admit("t") is True
