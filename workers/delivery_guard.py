"""Caps how often one broker message may be delivered, so a poison message cannot loop forever.

With acks_late and reject-on-worker-lost, a message whose task kills its worker
(OOM, segfault, SIGKILL) returns to the queue and is delivered again. Draining
is idempotent, so redelivery is safe, but a message that *always* kills its
worker would cycle forever. Each delivery increments a counter in Redis keyed by
the task id; past the limit the message is acknowledged and dropped with an
error log. Nothing is lost: the transfers stay pending in PostgreSQL and the
sweeper re-wakes the account, at its own slower cadence, with a new message.
"""

from __future__ import annotations

import logging

import redis

logger = logging.getLogger("settle.workers.delivery_guard")


class DeliveryGuard:
    def __init__(
        self, client: redis.Redis[bytes], *, prefix: str, max_deliveries: int, ttl_seconds: int
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._max = max_deliveries
        self._ttl = ttl_seconds

    def admit(self, task_id: str) -> bool:
        """Count this delivery; False once the message was delivered too often."""
        key = f"{self._prefix}deliveries:{task_id}"
        try:
            with self._client.pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, self._ttl)
                count = int(pipe.execute()[0])
        except redis.RedisError:
            # The guard protects against loops; it must never block real work.
            logger.warning("delivery counter unavailable; admitting %s", task_id, exc_info=True)
            return True
        if count > self._max:
            logger.error("dropping message %s after %d deliveries", task_id, count - 1)
            return False
        return True

    def forget(self, task_id: str) -> None:
        try:
            self._client.delete(f"{self._prefix}deliveries:{task_id}")
        except redis.RedisError:
            logger.debug("could not clear delivery counter of %s", task_id, exc_info=True)
