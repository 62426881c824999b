"""The real stack: uvicorn serving the gateway and a Celery worker on the real broker."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.processes import Process, running_gateway, running_worker
from tests.services import Services, fresh_broker_url


@pytest.fixture(scope="session", autouse=True)
def _services(services: Services) -> Services:
    """Session-scoped, so the environment the subprocesses inherit is set before any starts."""
    return services


@pytest.fixture(scope="package")
def live_worker() -> Iterator[Process]:
    with running_worker(concurrency=2) as worker:
        yield worker


@pytest.fixture(scope="package")
def live_api(live_worker: Process) -> Iterator[httpx.Client]:
    with running_gateway() as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


@pytest.fixture
def isolated(settings: Any, services: Services, redis_client: Any) -> Iterator[Any]:
    """Settings with queues no other worker of this run listens on (a Redis key prefix
    of their own, and on RabbitMQ a vhost of their own); cleaned up. Start processes
    on them with `tests.processes.settings_env(isolated)`."""
    prefix = f"settle-isolated-{secrets.token_hex(4)}:"
    with fresh_broker_url(services) as broker_url:
        yield settings.model_copy(update={"redis_prefix": prefix, "broker_url": broker_url})
    for key in redis_client.scan_iter(match=f"{prefix}*"):
        redis_client.delete(key)
