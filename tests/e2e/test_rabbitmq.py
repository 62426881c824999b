"""RabbitMQ as the broker: what the configuration promises is what the broker runs.

Runs only on RabbitMQ (SETTLE_TEST_BROKER_URL; `.ci/run` does it). The queue type,
durability and confirm mode are read from the broker itself with rabbitmqctl, not
from Celery's configuration.
"""

from __future__ import annotations

import time
from urllib.parse import unquote, urlsplit

import pytest

from settle.broker import TRANSFERS_QUEUE, WEBHOOKS_QUEUE
from settle.config import Settings
from settle.harness import rabbitmq_rows
from settle.wakeups import LanePublisher
from tests.e2e.outage import assert_the_sweeper_delivers, deposit_during_outage
from tests.processes import queue_depth, running_worker, settings_env

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]


def vhost_of(settings: Settings) -> str:
    return unquote(urlsplit(settings.broker_url).path[1:])


def test_queues_are_durable_quorum_queues_and_publishes_are_confirmed(isolated):
    vhost = vhost_of(isolated)
    publisher = LanePublisher(isolated)  # the gateway's publisher
    try:
        assert publisher.publish([0]), "the wake-up was published (and confirmed)"
        # The publishing channel is still open (Celery pools it): it is in confirm mode.
        channels = rabbitmq_rows("list_channels", "confirm", "messages_unconfirmed", vhost=vhost)
        assert channels, "the publisher holds a channel on the vhost"
        assert all(row["confirm"] == "true" for row in channels), channels
        assert all(row["messages_unconfirmed"] == "0" for row in channels), channels
    finally:
        publisher.close()
    assert queue_depth(isolated) == 1

    with running_worker(settings_env(isolated), concurrency=1):  # declares both queues
        queues = {
            row["name"]: row
            for row in rabbitmq_rows("list_queues", "name", "type", "durable", vhost=vhost)
        }
        for name in (TRANSFERS_QUEUE, WEBHOOKS_QUEUE):
            assert queues[name]["type"] == "quorum", queues
            assert queues[name]["durable"] == "true", queues
        # A drain retried with a countdown waits in Celery's native delayed-delivery
        # queues (quorum queues too), never in a worker's memory.
        delayed = [row for name, row in queues.items() if name.startswith("celery_delayed_")]
        assert len(delayed) == 28 and all(row["type"] == "quorum" for row in delayed), queues
        deadline = time.monotonic() + 30
        while queue_depth(isolated):  # the worker consumed (and acknowledged) the wake-up
            assert time.monotonic() < deadline, "the wake-up was never consumed"
            time.sleep(0.2)


def test_rabbitmq_down_at_accept_time_still_answers_202_and_the_sweeper_delivers(
    isolated, session_factory
):
    # Nothing listens on port 1: every publish fails at once.
    dead_broker = isolated.model_copy(update={"broker_url": "amqp://guest:guest@127.0.0.1:1//"})
    accepted = deposit_during_outage(dead_broker, session_factory)
    assert accepted.ready_checks == {"database": "ok", "broker": "unavailable", "redis": "ok"}
    assert queue_depth(isolated) == 0, "nothing reached the live broker"
    assert_the_sweeper_delivers(isolated, accepted)
