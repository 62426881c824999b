"""Broker choice: Redis by default, RabbitMQ with quorum queues and confirms when asked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from domain.repositories.leadership import lock_key
from settle.broker import DRAIN_LANE_TASK, TRANSFERS_QUEUE, WEBHOOKS_QUEUE, celery_config
from settle.config import Settings


def _settings(**overrides):
    return Settings(redis_url="redis://127.0.0.1:6379/0", **overrides)


def test_redis_is_the_broker_unless_told_otherwise():
    settings = _settings()
    config = celery_config(settings)
    assert not settings.uses_rabbitmq
    assert config["broker_url"] == "redis://127.0.0.1:6379/0"
    assert config["broker_transport_options"]["global_keyprefix"] == settings.redis_prefix
    assert "task_queues" not in config


def test_rabbitmq_gets_durable_quorum_queues_and_publisher_confirms():
    settings = _settings(broker_url="amqp://guest:guest@rabbit:5672/settle")
    config = celery_config(settings)
    assert settings.uses_rabbitmq
    assert config["broker_url"] == "amqp://guest:guest@rabbit:5672/settle"
    assert config["broker_transport_options"] == {"confirm_publish": True}
    queues = {queue.name: queue for queue in config["task_queues"]}
    assert set(queues) == {TRANSFERS_QUEUE, WEBHOOKS_QUEUE}
    for name, queue in queues.items():
        assert queue.durable and queue.queue_arguments == {"x-queue-type": "quorum"}
        # Native delayed delivery (retries with a countdown) needs a non-direct exchange.
        assert queue.exchange.type == "topic" and queue.routing_key == name
    assert config["task_routes"][DRAIN_LANE_TASK] == {"queue": TRANSFERS_QUEUE}
    assert config["task_default_queue_type"] == "quorum"


@pytest.mark.parametrize("url", ["http://rabbit/", "kafka://x", "rabbit:5672"])
def test_unknown_broker_schemes_are_refused_at_start(url):
    with pytest.raises(ValidationError, match="SETTLE_BROKER_URL must start with one of"):
        _settings(broker_url=url)


def test_beat_lock_keys_are_stable_signed_64_bit_and_per_deployment():
    key = lock_key("beat:settle:")
    assert key == lock_key("beat:settle:") and -(2**63) <= key < 2**63
    assert key != lock_key("beat:other:")
