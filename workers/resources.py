"""Per-process database engine for tasks, created lazily and reset after fork."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Sequence

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from domain.db import make_engine, make_session_factory
from domain.lanes import Lanes
from domain.secret_box import SecretBox
from domain.uow import Ports, QueuedDelivery
from settle.broker import (
    DELIVER_WEBHOOKS_TASK,
    TRANSFERS_QUEUE,
    WEBHOOKS_QUEUE,
    queue_depth,
    redis_client,
    redis_client_name,
)
from settle.config import get_settings
from settle.wakeups import LanePublisher, LaneWaker
from workers.delivery_guard import DeliveryGuard

logger = logging.getLogger("settle.workers")

_engine: Engine | None = None
_factory: sessionmaker[Session] | None = None
_redis: redis.Redis[bytes] | None = None
_ports: Ports | None = None
_lock = threading.Lock()


def session_factory() -> sessionmaker[Session]:
    global _engine, _factory
    if _factory is not None:
        return _factory
    with _lock:  # the webhooks worker runs threads
        if _factory is not None:
            return _factory
        settings = get_settings()
        # Transfer workers are processes (one connection each, plus a spare); the
        # webhooks worker runs threads, each of which may hold a connection briefly.
        # No pre-ping: tasks retry on OperationalError, and SQLAlchemy drops the
        # whole pool on the first disconnect it sees, so a restart costs one retry,
        # not a round trip before every unit of work.
        _engine = make_engine(
            settings.database_url,
            pool_size=2,
            max_overflow=settings.webhook_concurrency,
            pre_ping=False,
            # Per process (created after fork): pg_stat_activity tells pool children apart.
            application_name=f"settle-worker {os.getpid()}",
            # A worker's transactions are idle only for the milliseconds of Python between
            # their statements; one idle for seconds belongs to a worker that is frozen
            # (SIGSTOP, a stalled VM), swapping or stuck. Its row locks would stop every
            # other drain of those accounts, and its transaction id would hold back the
            # event stream and the audit sealer, for as long as it is stuck: PostgreSQL
            # ends it instead (its batch rolls back; the task retries). Verification
            # runs in a process of its own, without this limit.
            idle_in_transaction_timeout_seconds=settings.drain_idle_timeout_seconds,
        )
        _factory = make_session_factory(_engine)
    return _factory


def _redis_client() -> redis.Redis[bytes]:
    global _redis
    if _redis is None:
        _redis = redis_client(get_settings(), name=redis_client_name("worker"))
    return _redis


# Deliveries per message. One message per endpoint and chunk: an engine batch's
# deliveries to one endpoint travel together (one task, one kept-alive connection,
# one statement to record them), while a slow endpoint only holds up its own.
DELIVERIES_PER_MESSAGE = 50


class _CeleryDeliveries:
    """Queues webhook deliveries on the webhooks queue (domain.uow.DeliverySender)."""

    def send(self, deliveries: Sequence[QueuedDelivery]) -> None:
        from workers.celery_app import app

        by_endpoint: dict[uuid.UUID, list[str]] = {}
        for queued in deliveries:
            by_endpoint.setdefault(queued.endpoint_id, []).append(str(queued.delivery_id))
        for endpoint_id, ids in by_endpoint.items():
            for start in range(0, len(ids), DELIVERIES_PER_MESSAGE):
                chunk = ids[start : start + DELIVERIES_PER_MESSAGE]
                app.send_task(
                    DELIVER_WEBHOOKS_TASK,
                    args=[chunk],
                    # What Flower and the worker's log show instead of the id list.
                    argsrepr=f"{len(chunk)} delivery(ies) to endpoint {endpoint_id}",
                    queue=WEBHOOKS_QUEUE,
                )


def lane_publisher(lanes: Lanes | None = None) -> LanePublisher:
    from workers.celery_app import app

    return LanePublisher(get_settings(), app, lanes=lanes)


def lane_waker(lanes: Lanes | None = None) -> LaneWaker:
    return LaneWaker(_redis_client(), lane_publisher(lanes), prefix=get_settings().redis_prefix)


class _LaneClaims:
    """domain.services.draining.LaneClaims over the lane markers and the broker."""

    def __init__(self, lanes: Lanes) -> None:
        self._lanes = lanes
        self._waker = lane_waker(lanes)

    def refresh(self, lane: int) -> None:
        self._waker.refresh(lane)

    def release(self, lane: int) -> None:
        self._waker.release(lane)

    def claim(self, lane: int) -> bool:
        return self._waker.claim(lane)

    def wait_for_bell(self, lane: int, timeout: float) -> bool:
        return self._waker.wait_for_bell(lane, timeout)

    def hand_on(self, lane: int) -> None:
        # The marker stays ours: nobody else publishes for this lane meanwhile.
        lane_publisher(self._lanes).publish([lane], why="handed on: more pending")

    def others_waiting(self) -> bool:
        from workers.celery_app import app

        try:
            return bool(queue_depth(app, get_settings(), TRANSFERS_QUEUE, _redis_client()))
        except Exception:  # unknown means "yes": hand the lane on, lose nothing
            logger.debug("queue depth unavailable", exc_info=True)
            return True


def lane_claims(lanes: Lanes) -> _LaneClaims:
    return _LaneClaims(lanes)


def ports() -> Ports:
    """What units of work in tasks may do after commit: wake lanes, send webhooks."""
    global _ports
    if _ports is None:
        _ports = Ports(waker=lane_waker(), deliveries=_CeleryDeliveries())
    return _ports


def delivery_guard(*, ttl_seconds: int) -> DeliveryGuard:
    settings = get_settings()
    return DeliveryGuard(
        _redis_client(),
        prefix=settings.redis_prefix,
        max_deliveries=settings.max_deliveries,
        ttl_seconds=ttl_seconds,
    )


def secret_box() -> SecretBox:
    return SecretBox(get_settings().webhook_encryption_key)


def reset() -> None:
    global _engine, _factory, _redis, _ports
    _redis, _ports = None, None
    if _engine is not None:
        _engine.dispose(close=False)
    _engine, _factory = None, None


def dispose() -> None:
    global _engine, _factory
    if _engine is not None:
        _engine.dispose()
    _engine, _factory = None, None
