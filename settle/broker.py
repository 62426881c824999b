"""How every process reaches the broker and Redis: URLs, queues, transport options.

The gateway (which only publishes) and the workers (which consume) both build
their Celery configuration from here, so they always agree on queue names and
queue types. Two brokers:
- Redis (the default, REDIS_URL): queues are lists under the key prefix; an
  unacknowledged message comes back after the visibility timeout.
- RabbitMQ (SETTLE_BROKER_URL=amqp://...): durable quorum queues (replicated,
  Raft-based, persistent), publisher confirms (a publish returns once the broker
  has the message), and an unacknowledged message comes back as soon as its
  consumer's connection closes. Redis stays for rate limits and lane markers.
Tasks are acknowledged late with either (workers/celery_app.py).
"""

from __future__ import annotations

import os
from typing import Any

import redis
import redis.asyncio as aioredis
from celery import Celery
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
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
# A publish waits this long for the broker's confirm before it counts as failed (the
# gateway then relies on the sweeper, as for any failed wake-up).
PUBLISH_CONFIRM_TIMEOUT_SECONDS = 5.0
QUORUM = {"x-queue-type": "quorum"}


def broker_url(redis_url: str) -> str:
    """Kombu spells unix-socket Redis `redis+socket://`; redis-py spells it `unix://`."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


def _common_config() -> dict[str, Any]:
    return {
        "broker_connection_retry_on_startup": True,
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


def _redis_config(settings: Settings, client_name: str) -> dict[str, Any]:
    return {
        "broker_url": broker_url(settings.redis_url),
        "broker_transport_options": {
            "global_keyprefix": settings.redis_prefix,
            # CLIENT LIST tells the broker's connections from Settle's own clients.
            "client_name": client_name,
            "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
            # Fail fast when Redis is down: the gateway must still answer 202
            # quickly (the transfer is durable; the sweeper delivers the wake-up).
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        },
    }


def rabbitmq_queues() -> list[Queue]:
    """Settle's two queues on RabbitMQ: durable quorum queues, each behind a topic exchange
    of its own name (Celery's native delayed delivery, which quorum queues need for a
    task retried with a countdown, cannot route through a direct exchange)."""
    return [
        Queue(  # type: ignore[no-untyped-call]  # kombu's constructors are untyped
            name,
            Exchange(name, type="topic", durable=True),  # type: ignore[no-untyped-call]
            routing_key=name,
            durable=True,
            queue_arguments=QUORUM,
        )
        for name in (TRANSFERS_QUEUE, WEBHOOKS_QUEUE)
    ]


def _rabbitmq_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        # Publisher confirms: basic.publish waits for the broker's ack (a nack raises),
        # so a wake-up or webhook send that returned is in a quorum queue's log.
        "broker_transport_options": {"confirm_publish": True},
        "broker_connection_timeout": 2,
        "task_queues": rabbitmq_queues(),
        # Any queue Celery creates on its own (none today) is a quorum queue too.
        "task_default_queue_type": "quorum",
        "task_default_exchange_type": "topic",
    }


# What Celery's Redis broker connections are named in CLIENT LIST unless told otherwise;
# workers/celery_app.py renames them `settle-celery-<pid>` as each worker process, pool
# child and beat starts (the configuration is built once, before a worker forks), and
# a publisher with an app of its own (the gateway's) passes its own name.
CELERY_CLIENT_NAME = "settle-celery"


def celery_config(settings: Settings, *, client_name: str = CELERY_CLIENT_NAME) -> dict[str, Any]:
    broker = (
        _rabbitmq_config(settings)
        if settings.uses_rabbitmq
        else _redis_config(settings, client_name)
    )
    return {**_common_config(), **broker}


def queue_depth(app: Celery, settings: Settings, queue: str, client: redis.Redis[bytes]) -> int:
    """Messages ready in `queue` (not those delivered and not yet acknowledged).

    Redis: kombu keeps a queue as a list under the key prefix. RabbitMQ: a passive
    declare answers the count (a queue nobody declared yet holds nothing)."""
    if not settings.uses_rabbitmq:
        return int(client.llen(f"{settings.redis_prefix}{queue}"))
    with app.pool.acquire(block=True, timeout=PUBLISH_CONFIRM_TIMEOUT_SECONDS) as connection:
        channel = connection.channel()
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except connection.channel_errors:  # 404: not declared yet
            return 0
        finally:
            if channel.is_open:
                channel.close()


def ping_rabbitmq(settings: Settings) -> None:
    """Open and close one AMQP connection (readiness); raises when RabbitMQ does not answer."""
    url = settings.broker_url
    with Connection(url, connect_timeout=2) as connection:  # type: ignore[no-untyped-call]
        connection.connect()


def redis_client_name(role: str) -> str:
    """`settle-<role>-<pid>`: what CLIENT LIST shows for a process's own Redis clients
    (as `application_name` does in pg_stat_activity), so an operator, or the soak,
    can say whose connections they are. Redis names may not contain spaces."""
    return f"settle-{role}-{os.getpid()}"


# Rate limits, lockouts and lane markers fail open when Redis is down; redis-py's
# default retries (with backoff) would turn "fail open" into seconds of stall per
# request, so Settle's clients try once.
def redis_client(settings: Settings, *, name: str) -> redis.Redis[bytes]:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=5,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
        client_name=name,
    )


def async_redis_client(settings: Settings, *, name: str) -> aioredis.Redis[bytes]:
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=5,
        socket_connect_timeout=2,
        retry=AsyncRetry(NoBackoff(), 0),
        client_name=name,
    )
