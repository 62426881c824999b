"""How every process reaches Redis: the broker URL, transport options and key prefix.

The gateway (which only publishes) and the workers (which consume) both build
their Celery configuration from here, so they always agree on queue names.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from settle.config import Settings

TRANSFERS_QUEUE = "transfers"
WEBHOOKS_QUEUE = "webhooks"
DRAIN_LANE_TASK = "settle.drain_lane"
SWEEP_PENDING_TASK = "settle.sweep_pending"
VERIFY_LEDGER_TASK = "settle.verify_ledger"
PURGE_IDEMPOTENCY_TASK = "settle.purge_idempotency_keys"
DELIVER_WEBHOOK_TASK = "settle.deliver_webhook"  # one delivery: messages queued before batches
DELIVER_WEBHOOKS_TASK = "settle.deliver_webhooks"

# Longer than any task can run (tasks are hard-limited far below this), so
# Redis never hands an unacknowledged message to a second worker while the
# first is still working on it.
VISIBILITY_TIMEOUT_SECONDS = 3600


def broker_url(redis_url: str) -> str:
    """Kombu spells unix-socket Redis `redis+socket://`; redis-py spells it `unix://`."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": broker_url(settings.redis_url),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "global_keyprefix": settings.redis_prefix,
            "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
            # Fail fast when Redis is down: the gateway must still answer 202
            # quickly (the transfer is durable; the sweeper delivers the wake-up).
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        },
        "task_default_queue": TRANSFERS_QUEUE,
        "task_routes": {
            DRAIN_LANE_TASK: {"queue": TRANSFERS_QUEUE},
            DELIVER_WEBHOOK_TASK: {"queue": WEBHOOKS_QUEUE},
            DELIVER_WEBHOOKS_TASK: {"queue": WEBHOOKS_QUEUE},
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "timezone": "UTC",
    }


# Rate limits, lockouts and lane markers fail open when Redis is down; redis-py's
# default retries (with backoff) would turn "fail open" into seconds of stall per
# request, so Settle's clients try once.
def redis_client(settings: Settings) -> redis.Redis[bytes]:
    return redis.Redis.from_url(
        settings.redis_url, socket_timeout=5, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
    )


def async_redis_client(settings: Settings) -> aioredis.Redis[bytes]:
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=5,
        socket_connect_timeout=2,
        retry=AsyncRetry(NoBackoff(), 0),
    )
