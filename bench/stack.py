"""The system under test: a fresh database and Redis key prefix, and Settle's processes.

Processes are started exactly as the Procfile starts them (`settle serve NAME`, argv
from settle/processes.py), with the environment a benchmark needs: money rate limits
lifted, private webhook targets allowed (the receiver is on 127.0.0.1), long-lived
access tokens. Everything is removed afterwards: processes, database, Redis keys,
embedded servers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from settle import processes
from settle.devservices import start_missing_services, stop_all
from settle.harness import (
    Process,
    delete_redis_keys,
    free_port,
    gateway_env,
    migrated_database,
)

UNLIMITED = "1000000000/60"


@dataclass
class StackOptions:
    web_processes: int | None = None  # None: one per core, as in production
    worker_concurrency: int | None = None
    with_flower: bool = False
    access_log: bool = False
    keep_logs: bool = False


@dataclass
class Stack:
    env: dict[str, str]
    database_url: str
    database_name: str
    base_url: str
    processes: dict[str, Process] = field(default_factory=dict)

    def dead(self) -> list[str]:
        """Processes that exited on their own (a failed run, whatever the figures say)."""
        return [
            f"{name} exited with {p.popen.returncode}; log tail:\n{p.log()[-1500:]}"
            for name, p in self.processes.items()
            if p.popen.poll() is not None
        ]


def _bench_env(
    base: dict[str, str], database_url: str, tmp: Path, opts: StackOptions
) -> dict[str, str]:
    env = dict(base)
    env.update(
        DATABASE_URL=database_url,
        SETTLE_ENVIRONMENT="test",
        SETTLE_JWT_SECRET=secrets.token_urlsafe(48),
        SETTLE_WEBHOOK_ENCRYPTION_KEY=secrets.token_urlsafe(48),
        SETTLE_AUDIT_KEY=secrets.token_urlsafe(48),
        SETTLE_AUDIT_CHECKPOINT_PATH=str(tmp / "audit-checkpoints.jsonl"),
        SETTLE_REDIS_PREFIX=f"settle-bench-{secrets.token_hex(4)}:",
        # One client sends everything: per-user limits would measure the limiter.
        SETTLE_RATE_LIMIT_MONEY_PER_USER=UNLIMITED,
        SETTLE_RATE_LIMIT_LOGIN_PER_IP=UNLIMITED,
        SETTLE_RATE_LIMIT_LOGIN_PER_ACCOUNT=UNLIMITED,
        # A bulk client is the normal case here, not an anomaly: without this every
        # request past the 200th of the day writes a velocity flag to the audit chain.
        SETTLE_DAILY_VELOCITY_THRESHOLD="1000000000",
        # The bench funds its hot source with one large deposit: no second operator here.
        SETTLE_APPROVAL_THRESHOLD="1000000000000",
        # One customer owns every account a scenario opens.
        SETTLE_MAX_ACCOUNTS_PER_USER="1000000000",
        # The receiver listens on 127.0.0.1.
        SETTLE_WEBHOOK_ALLOW_PRIVATE="true",
        # A soak outlives the default 15-minute access token.
        # The longest lifetime Settle allows: a run (soak included) is shorter.
        SETTLE_ACCESS_TOKEN_TTL_SECONDS="3600",  # noqa: S106 (a lifetime, not a secret)
        SETTLE_BEAT_SCHEDULE=str(tmp / "celerybeat-schedule"),
        SETTLE_HTTP_ACCESS_LOG="true" if opts.access_log else "false",
    )
    for name, value in (
        ("SETTLE_WORKER_CONCURRENCY", opts.worker_concurrency),
        ("SETTLE_WEB_PROCESSES", opts.web_processes),
    ):
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    if opts.keep_logs:
        env["SETTLE_KEEP_TEST_LOGS"] = "1"
    return env


@contextmanager
def running_stack(opts: StackOptions) -> Iterator[Stack]:
    """Embedded PostgreSQL/Redis unless DATABASE_URL/REDIS_URL are set, as everywhere.

    Unwinds in reverse, also when a step fails half-way: processes stopped, Redis keys
    deleted, database and roles dropped, embedded servers stopped, temp dir removed."""
    with ExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix="settle-bench-"))
        cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        base = dict(os.environ)
        cleanup.callback(stop_all, start_missing_services(tmp, base))
        name, roles = cleanup.enter_context(migrated_database(base["DATABASE_URL"], "settle_bench"))
        database_url = roles.app_url
        env = _bench_env(base, database_url, tmp, opts)
        env["SETTLE_MIGRATION_DATABASE_URL"] = roles.owner_url
        cleanup.callback(delete_redis_keys, base["REDIS_URL"], env["SETTLE_REDIS_PREFIX"])
        started: dict[str, Process] = {}
        cleanup.callback(_stop, started)
        port = free_port()
        env = gateway_env(env, port=port, processes=opts.web_processes)
        names = ["worker", "webhooks", "beat", "web"]
        if opts.with_flower:
            env["FLOWER_BASIC_AUTH"] = f"bench:{secrets.token_urlsafe(12)}"
            env["SETTLE_FLOWER_PORT"] = str(free_port())
            names.append("flower")
        for process_name in names:
            started[process_name] = Process(process_name, processes.serve_argv(process_name), env)
        base_url = f"http://127.0.0.1:{port}"
        started["worker"].wait_for_log("ready.")
        started["webhooks"].wait_for_log("ready.")
        started["web"].wait_for_http(f"{base_url}/healthz")
        if "flower" in started:
            # Every Flower path, /healthcheck included, needs its credentials (settle/flower.py).
            started["flower"].wait_for_log("Visit me at")
        yield Stack(env, database_url, name, base_url, started)


def _stop(started: dict[str, Process]) -> None:
    for process in reversed(list(started.values())):
        process.stop()
