"""Every Redis connection Settle opens carries a name in CLIENT LIST (real Redis): its
own clients `settle-<role>-<pid>`, the broker's `settle-celery` / `settle-publisher`, so
an operator or the soak can tell whose connections a count is made of."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from celery import Celery

from settle import broker
from settle.broker import CELERY_CLIENT_NAME, celery_config, redis_client_name
from settle.wakeups import PUBLISHER_CLIENT_NAME, LanePublisher
from tests.services import client_names


def test_settles_own_clients_carry_role_and_pid(settings, redis_client):
    name = redis_client_name("gateway")
    assert name == f"settle-gateway-{os.getpid()}"
    client = broker.redis_client(settings, name=name)
    try:
        client.ping()
        assert name in client_names(redis_client)
    finally:
        client.close()


def test_the_gateways_async_client_is_named_too(settings, redis_client):
    name = redis_client_name("gateway")

    async def ping_and_list() -> list[str]:
        client = broker.async_redis_client(settings, name=name)
        try:
            await client.ping()
            return client_names(redis_client)
        finally:
            await client.aclose()

    assert name in asyncio.run(ping_and_list())


def test_broker_connections_are_named_per_application(settings, redis_client):
    settings = settings.model_copy(update={"broker_url": ""})  # names are CLIENT LIST's
    workers = Celery("names-test", set_as_current=False)
    workers.conf.update(celery_config(settings))
    publisher = LanePublisher(settings)
    try:
        with workers.connection_for_write() as connection:
            connection.default_channel.client.ping()
            with publisher.celery.connection_for_write() as own:
                own.default_channel.client.ping()
                names = client_names(redis_client)
                assert CELERY_CLIENT_NAME in names
                assert PUBLISHER_CLIENT_NAME in names
    finally:
        publisher.close()
        workers.close()


def test_the_gateways_publisher_keeps_one_producer(settings, redis_client):
    """Publishes from many threads at once (the gateway's event loop hands them to
    threads) take turns on one producer: its connections stay as many as after one
    publish, so the soak sees no pool filling up late (without the limit: 16 here)."""
    name = f"settle-publisher-test{os.getpid()}"
    isolated = settings.model_copy(update={"redis_prefix": f"{name}:", "broker_url": ""})
    publisher = LanePublisher(isolated, client_name=name)
    try:
        assert publisher.publish([0])
        alone = client_names(redis_client).count(name)  # kombu's: one that pinged, one that sent
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert all(pool.map(lambda lane: publisher.publish([lane % 2]), range(64)))
        assert client_names(redis_client).count(name) == alone <= 2
    finally:
        publisher.close()
        for key in redis_client.scan_iter(match=f"{name}:*"):
            redis_client.delete(key)
