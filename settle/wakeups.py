"""Coalesced engine wake-ups: one broker message per idle lane, not one per transfer.

A lane's marker in Redis means "a drain of this lane is queued or running". A
wake-up sets it (SET NX) and publishes a `drain_lane` message only if it was not
set already; the drain lets go of it (DEL) when it finds the lane empty, then
looks once more. So under load a busy lane gets no new messages at all, and:
- a transfer committed before the drain let go is seen by that last look;
- one committed after finds no marker and publishes a new message.
A wake-up that finds the marker set rings the lane's bell instead (a Redis list of
at most one element): a drain that lingers after a batch that was not full
(`wait_for_bell`, domain/services/draining.py) wakes at once and takes the next
batch, without letting go of the lane and without a broker message. The bell only
saves time: a ring nobody waits for costs the next lingering drain one look.
Both happen in one Lua call per wake-up (one round trip, atomic per lane).
The marker expires on its own (a crashed drain cannot hold a lane forever), a
failed Redis call publishes anyway, and the beat sweeper wakes any lane whose
pending transfers go stale whatever the markers say. Both the gateway (which
never imports `workers`) and the workers publish through here, by task name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

import redis
import redis.asyncio as aioredis
from celery import Celery

from domain.lanes import Lanes
from settle.broker import (
    DRAIN_LANE_TASK,
    PUBLISH_CONFIRM_TIMEOUT_SECONDS,
    TRANSFERS_QUEUE,
    celery_config,
)
from settle.config import Settings

logger = logging.getLogger("settle.wakeups")

MARKER_TTL_SECONDS = 30
# The broker connections of a publisher with its own Celery app (the gateway's).
PUBLISHER_CLIENT_NAME = "settle-publisher"

# KEYS: marker and bell of each lane, in pairs; ARGV[1]: their expiry in seconds.
# Returns 1 per lane whose marker this call set (publish a message), 0 per lane whose
# drain was rung instead. A script, not a pipeline: "ring only if the marker is held"
# must be one step, or a drain could let go between the two and leave a stale ring.
_WAKE = """
local claimed = {}
for i = 1, #KEYS, 2 do
    if redis.call('SET', KEYS[i], 1, 'NX', 'EX', ARGV[1]) then
        claimed[#claimed + 1] = 1
    else
        redis.call('LPUSH', KEYS[i + 1], 1)
        redis.call('LTRIM', KEYS[i + 1], 0, 0)
        redis.call('EXPIRE', KEYS[i + 1], ARGV[1])
        claimed[#claimed + 1] = 0
    end
end
return claimed
"""


def _marker(prefix: str, lanes: Lanes, lane: int) -> str:
    return f"{prefix}lane:{lanes.count}:{lane}"


def _bell(prefix: str, lanes: Lanes, lane: int) -> str:
    return f"{_marker(prefix, lanes, lane)}:bell"


def _wake_keys(prefix: str, lanes: Lanes, ordered: list[int]) -> list[str]:
    return [
        key
        for lane in ordered
        for key in (_marker(prefix, lanes, lane), _bell(prefix, lanes, lane))
    ]


class LanePublisher:
    """Sends `drain_lane` messages (no marker logic)."""

    def __init__(
        self,
        settings: Settings,
        app: Celery | None = None,
        *,
        lanes: Lanes | None = None,
        client_name: str = PUBLISHER_CLIENT_NAME,
    ) -> None:
        self.lanes = lanes or Lanes(settings.lanes)
        self._own = app is None
        self._celery = app or Celery("settle-publisher")
        if self._own:  # its own broker connections, named `client_name` in CLIENT LIST
            self._celery.conf.update(
                celery_config(settings, client_name=client_name),
                # One producer: concurrent publishes (event loop and route threads) take
                # turns on one connection per process instead of growing a pool of ten
                # for a message that is rare (only an idle lane gets one) and quick.
                broker_pool_limit=1,
            )

    @property
    def celery(self) -> Celery:
        """The Celery app it publishes with (its broker connection pool)."""
        return self._celery

    def publish(self, lanes: Collection[int], *, why: str = "new transfers") -> bool:
        ok = True
        for lane in lanes:
            try:
                self._celery.send_task(
                    DRAIN_LANE_TASK,
                    # The lane count travels with the lane, so workers need not agree.
                    args=[lane, self.lanes.count],
                    # What Flower and the worker's log show instead of "[2, 4]".
                    argsrepr=f"lane {lane} of {self.lanes.count} ({why})",
                    queue=TRANSFERS_QUEUE,
                    # Fail fast: a slow broker must not hold a 202; the sweeper covers us.
                    retry=True,
                    retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
                    # RabbitMQ confirms every publish; a broker that cannot take the
                    # message (memory alarm, no quorum) must not hold the 202 either.
                    confirm_timeout=PUBLISH_CONFIRM_TIMEOUT_SECONDS,
                )
            except Exception:
                logger.warning(
                    "wake-up of lane %s not published; the sweeper will", lane, exc_info=True
                )
                ok = False
        return ok

    def close(self) -> None:
        if self._own:
            self._celery.close()


class LaneWaker:
    """Synchronous wake-ups (workers, sync routes); implements domain.uow.LaneWaker."""

    def __init__(
        self, client: redis.Redis[bytes], publisher: LanePublisher, *, prefix: str
    ) -> None:
        self._client, self._publisher, self._prefix = client, publisher, prefix
        self.lanes = publisher.lanes
        self._wake = client.register_script(_WAKE)

    def wake_slots(self, slots: Collection[int]) -> None:
        self._publisher.publish(self._claim({self.lanes.of_slot(s) for s in slots}))

    def force(self, slots: Collection[int]) -> list[int]:
        """Publish whatever the markers say (the sweeper: a marker may be stale); a lane
        whose marker is held also gets its bell rung, so a lingering drain looks now."""
        lanes = sorted({self.lanes.of_slot(s) for s in slots})
        self._claim(lanes)
        self._publisher.publish(lanes, why="sweeper: stale pending transfers")
        return lanes

    def refresh(self, lane: int) -> None:
        try:
            self._client.set(_marker(self._prefix, self.lanes, lane), 1, ex=MARKER_TTL_SECONDS)
        except redis.RedisError:
            logger.debug("could not refresh the marker of lane %s", lane, exc_info=True)

    def release(self, lane: int) -> None:
        """Let go of the lane, and of a ring nobody took: a wake-up that rang after the
        drain stopped waiting committed before this, so the drain's last look sees it."""
        try:
            self._client.delete(
                _marker(self._prefix, self.lanes, lane), _bell(self._prefix, self.lanes, lane)
            )
        except redis.RedisError:
            logger.debug("could not release the marker of lane %s", lane, exc_info=True)

    def claim(self, lane: int) -> bool:
        return bool(self._claim([lane]))

    def wait_for_bell(self, lane: int, timeout: float) -> bool:
        """Whether a wake-up rang the lane's bell within `timeout` seconds (taking the
        ring); False on a Redis error, so the caller lets go of the lane as usual."""
        try:
            return self._client.blpop([_bell(self._prefix, self.lanes, lane)], timeout) is not None
        except redis.RedisError:
            logger.debug("could not wait for the bell of lane %s", lane, exc_info=True)
            return False

    def _claim(self, lanes: Collection[int]) -> list[int]:
        """The lanes whose marker this call set (all of them if Redis is unreachable)."""
        ordered = sorted(set(lanes))
        if not ordered:
            return []
        try:
            keys = _wake_keys(self._prefix, self.lanes, ordered)
            results: list[Any] = self._wake(keys=keys, args=[MARKER_TTL_SECONDS])
        except redis.RedisError:
            logger.warning("lane markers unavailable; publishing every wake-up", exc_info=True)
            return ordered
        return [lane for lane, claimed in zip(ordered, results, strict=True) if claimed]


class AsyncLaneWaker:
    """The gateway's wake-ups, on its event loop; publishing (rare) runs in a thread."""

    def __init__(
        self, client: aioredis.Redis[bytes], publisher: LanePublisher, *, prefix: str
    ) -> None:
        self._client, self._publisher, self._prefix = client, publisher, prefix
        self.lanes = publisher.lanes
        self._wake = client.register_script(_WAKE)

    async def wake_slots(self, slots: Collection[int]) -> bool:
        ordered = sorted({self.lanes.of_slot(s) for s in slots})
        if not ordered:
            return True
        try:
            keys = _wake_keys(self._prefix, self.lanes, ordered)
            results: list[Any] = await self._wake(keys=keys, args=[MARKER_TTL_SECONDS])
            claimed = [lane for lane, ok in zip(ordered, results, strict=True) if ok]
        except (redis.RedisError, OSError):
            logger.warning("lane markers unavailable; publishing every wake-up", exc_info=True)
            claimed = ordered
        if not claimed:
            return True
        published = await asyncio.to_thread(self._publisher.publish, claimed)
        return published
