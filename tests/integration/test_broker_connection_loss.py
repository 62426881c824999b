"""A worker's broker connection survives Redis dying under it (workers/broker_consumer.py).

Against a real redis-server started by the test: a connection consuming a direct queue
and a fan-out queue on its default channel, one message delivered and not yet
acknowledged, then the server SIGKILLed. Celery 5.7's lost-connection handling
(`collect()`, then `close()`) must not raise anything but connection errors, and the
unacknowledged message must come back once Redis is back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Queue

from settle.devservices import EmbeddedRedis
from workers.broker_consumer import forget_default_channel_after_collect
from workers.celery_app import app

VISIBILITY_SECONDS = 1


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start(appendonly=True)  # the unacked index must outlive the kill
    try:
        yield server
    finally:
        server.stop()


def _connection(server: EmbeddedRedis) -> Connection:
    return Connection(
        f"redis+socket://{server.socket_path}",
        transport_options={"visibility_timeout": VISIBILITY_SECONDS},
    )


def _consume_one_and_lose_the_server(server: EmbeddedRedis) -> tuple[Connection, Queue]:
    """A connection like a worker's when Redis dies: a fan-out queue and a task queue
    consumed on its default channel, one message delivered and unacknowledged."""
    tasks = Queue("tasks", Exchange("tasks"), "tasks")
    control = Queue("control", Exchange("control", type="fanout"), auto_delete=True)
    connection = _connection(server)
    with connection.Producer() as producer:
        producer.publish({"n": 1}, exchange=tasks.exchange, routing_key="tasks", declare=[tasks])
    delivered: list[Any] = []
    consumer = Consumer(
        connection.default_channel,
        [tasks, control],
        callbacks=[lambda _body, message: delivered.append(message)],
        accept=["json"],
    )
    consumer.consume()
    # kombu restores a channel's unacknowledged messages at process exit too; by then
    # this test's server is gone, so that would only print a traceback.
    connection.default_channel.qos._on_collect.cancel()
    connection.drain_events(timeout=5)
    assert len(delivered) == 1
    with contextlib.suppress(TimeoutError):
        connection.drain_events(timeout=0.2)  # leaves a read in flight, as the event loop does
    server.kill()
    with pytest.raises(connection.connection_errors):
        connection.drain_events(timeout=2)
    return connection, tasks


def test_close_after_collect_raises_no_attribute_error(redis_server: EmbeddedRedis) -> None:
    connection, _ = _consume_one_and_lose_the_server(redis_server)
    forget_default_channel_after_collect(connection)
    connection.collect(socket_timeout=5)  # what Celery's consumer does first
    connection.close()  # and then this, which without the fix raised AttributeError


def test_the_unacknowledged_message_comes_back(redis_server: EmbeddedRedis) -> None:
    connection, tasks = _consume_one_and_lose_the_server(redis_server)
    forget_default_channel_after_collect(connection)
    connection.collect(socket_timeout=5)
    connection.close()
    redis_server.start(appendonly=True)
    time.sleep(VISIBILITY_SECONDS + 0.5)
    with _connection(redis_server) as again:
        received: list[Any] = []
        consumer = Consumer(
            again.default_channel,
            [tasks],
            callbacks=[lambda body, message: (received.append(body), message.ack())],
            accept=["json"],
        )
        consumer.consume()
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                again.drain_events(timeout=0.5)
    assert received == [{"n": 1}]


def test_the_workers_use_this_consumer() -> None:
    assert app.conf.worker_consumer == "workers.broker_consumer:Consumer"
