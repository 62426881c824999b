"""Lane markers and bells on the real Redis (settle/wakeups.py): a wake-up either takes
a free marker (and publishes) or rings the drain that holds it, in one script call.

The broker side is a recording stand-in: what is tested here is what Redis holds."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Collection, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from domain.lanes import Lanes
from settle.wakeups import AsyncLaneWaker, LaneWaker


class RecordingPublisher:
    """settle.wakeups.LanePublisher without a broker: remembers what it would send."""

    def __init__(self, lanes: Lanes) -> None:
        self.lanes = lanes
        self.published: list[int] = []

    def publish(self, lanes: Collection[int], *, why: str = "new transfers") -> bool:
        self.published.extend(lanes)
        return True


@pytest.fixture
def prefix(redis_client: Any) -> Iterator[str]:
    prefix = f"settle-test-bells-{secrets.token_hex(4)}:"
    yield prefix
    for key in redis_client.scan_iter(match=f"{prefix}*"):
        redis_client.delete(key)


def _waker(redis_client: Any, prefix: str) -> tuple[LaneWaker, RecordingPublisher]:
    publisher = RecordingPublisher(Lanes(2))
    return LaneWaker(redis_client, publisher, prefix=prefix), publisher  # type: ignore[arg-type]


def test_a_wake_up_takes_a_free_marker_and_publishes_without_ringing(redis_client, prefix):
    waker, publisher = _waker(redis_client, prefix)
    slot = waker.lanes.slots(1)[0]

    waker.wake_slots({slot})

    assert publisher.published == [1]
    assert redis_client.exists(f"{prefix}lane:2:1")
    assert not redis_client.exists(f"{prefix}lane:2:1:bell")
    assert not waker.wait_for_bell(1, 0.05)


def test_a_wake_up_of_a_held_lane_rings_its_drain_once_and_publishes_nothing(redis_client, prefix):
    waker, publisher = _waker(redis_client, prefix)
    assert waker.claim(0)  # a drain holds lane 0
    slot = waker.lanes.slots(0)[0]

    for _ in range(3):  # three accepts while the drain is busy
        waker.wake_slots({slot})

    assert publisher.published == []
    assert redis_client.llen(f"{prefix}lane:2:0:bell") == 1, "rings coalesce into one"
    assert redis_client.ttl(f"{prefix}lane:2:0:bell") > 0, "a ring expires with the marker"
    started = time.monotonic()
    assert waker.wait_for_bell(0, 5.0)
    assert time.monotonic() - started < 1.0, "a pending ring answers at once"
    assert not waker.wait_for_bell(0, 0.05), "the ring was taken"


def test_a_ring_wakes_a_drain_that_is_already_waiting(redis_client, prefix):
    waker, _ = _waker(redis_client, prefix)
    assert waker.claim(0)
    other, _ = _waker(redis_client, prefix)

    async def wait_and_ring() -> tuple[bool, float]:
        started = time.monotonic()
        waiting = asyncio.create_task(asyncio.to_thread(waker.wait_for_bell, 0, 5.0))
        await asyncio.sleep(0.2)
        other.wake_slots({other.lanes.slots(0)[0]})
        return await waiting, time.monotonic() - started

    rung, seconds = asyncio.run(wait_and_ring())
    assert rung and 0.2 <= seconds < 2.0


def test_letting_go_of_a_lane_drops_a_ring_nobody_took(redis_client, prefix):
    waker, publisher = _waker(redis_client, prefix)
    assert waker.claim(0)
    waker.wake_slots({waker.lanes.slots(0)[0]})  # rung while held

    waker.release(0)

    assert not redis_client.exists(f"{prefix}lane:2:0", f"{prefix}lane:2:0:bell")
    waker.wake_slots({waker.lanes.slots(0)[0]})
    assert publisher.published == [0], "free again: the next wake-up publishes"


def test_wake_ups_survive_a_script_cache_flush(redis_client, prefix):
    """Redis restarted (or SCRIPT FLUSH): the script is loaded again, not lost."""
    waker, publisher = _waker(redis_client, prefix)
    waker.wake_slots({waker.lanes.slots(0)[0]})
    redis_client.script_flush()

    waker.wake_slots({waker.lanes.slots(1)[0]})

    assert publisher.published == [0, 1]


def test_the_gateways_wake_ups_ring_and_claim_the_same_way(settings, redis_client, prefix):
    sync_waker, _ = _waker(redis_client, prefix)
    assert sync_waker.claim(0)  # lane 0 held by a drain, lane 1 free

    async def wake_both() -> tuple[bool, list[int]]:
        client = aioredis.Redis.from_url(settings.redis_url)
        publisher = RecordingPublisher(Lanes(2))
        waker = AsyncLaneWaker(client, publisher, prefix=prefix)  # type: ignore[arg-type]
        try:
            client_ok = await waker.wake_slots({waker.lanes.slots(0)[0], waker.lanes.slots(1)[0]})
            await client.script_flush()
            await waker.wake_slots({waker.lanes.slots(0)[0]})  # loaded again
            return client_ok, publisher.published
        finally:
            await client.aclose()

    ok, published = asyncio.run(wake_both())
    assert ok and published == [1]
    assert sync_waker.wait_for_bell(0, 1.0) and redis_client.exists(f"{prefix}lane:2:1")
