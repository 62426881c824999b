"""The real stack: uvicorn serving the gateway and a Celery worker on the real broker."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.processes import Process, running_gateway, running_worker
from tests.services import Services


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
def isolated(settings: Any, redis_client: Any) -> Iterator[Any]:
    """Settings with a Redis key prefix no other worker of this run listens on; cleaned up."""
    prefix = f"settle-isolated-{secrets.token_hex(4)}:"
    yield settings.model_copy(update={"redis_prefix": prefix})
    for key in redis_client.scan_iter(match=f"{prefix}*"):
        redis_client.delete(key)
