"""Unit tests: pure code, no servers, and no configuration from outside the test."""

from __future__ import annotations

import os

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from settle.config import Settings

CONNECTION_VARIABLES = {"DATABASE_URL", "REDIS_URL"}


@pytest.fixture(autouse=True)
def _hermetic_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # A `Settings(...)` built in a unit test sees only what the test passes: not the
    # developer's shell or `.env` / `var/run.env`, and not the SETTLE_* variables the
    # services plugin exports while integration tests run in the same session.
    for name in list(os.environ):
        if name.startswith("SETTLE_") or name in CONNECTION_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setitem(Settings.model_config, "env_file", None)


@pytest.fixture
def dead_redis() -> redis.Redis:
    """A client of a Redis that is down: nothing listens on port 1, so connecting fails at once.

    One attempt: redis-py's default retries would add seconds of back-off to every call,
    and these tests are about failing open, not about redis-py's retry policy.
    """
    return redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
