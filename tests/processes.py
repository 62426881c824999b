"""Starting the real gateway and Celery workers as subprocesses for end-to-end tests.

The command lines come from settle/processes.py (what `settle serve NAME` runs); the
subprocess plumbing from settle/harness.py, which the bench shares.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from settle import broker, processes
from settle.harness import Process, free_port, gateway_env

__all__ = [
    "MakeRun",
    "Process",
    "free_port",
    "make_run_checkout",
    "purge_queue",
    "queue_depth",
    "running_beat",
    "running_gateway",
    "running_make_run",
    "running_worker",
    "settings_env",
    "start_gateway",
    "worker_args",
]

REPOSITORY = Path(__file__).resolve().parent.parent


def settings_env(settings: Any, **extra: str) -> dict[str, str]:
    """os.environ for a subprocess that must use `settings`' queues (key prefix, broker)."""
    return {
        **os.environ,
        "SETTLE_REDIS_PREFIX": settings.redis_prefix,
        "SETTLE_BROKER_URL": settings.broker_url,
        **extra,
    }


@contextmanager
def _broker(settings: Any) -> Iterator[tuple[Celery, redis.Redis]]:
    app = Celery("settle-test-broker")
    app.conf.update(broker.celery_config(settings))
    client = redis.Redis.from_url(settings.redis_url)
    try:
        yield app, client
    finally:
        client.close()
        app.close()


def queue_depth(settings: Any, queue: str = broker.TRANSFERS_QUEUE) -> int:
    """Messages waiting in `settings`' queue, on Redis or RabbitMQ."""
    with _broker(settings) as (app, client):
        return broker.queue_depth(app, settings, queue, client)


def purge_queue(settings: Any, queue: str = broker.TRANSFERS_QUEUE) -> None:
    """Every waiting message of the queue is lost (as when a broker without persistence
    restarts)."""
    with _broker(settings) as (app, client):
        if not settings.uses_rabbitmq:
            client.delete(f"{settings.redis_prefix}{queue}")
            return
        with app.connection_for_write() as connection:
            channel = connection.channel()
            try:
                channel.queue_purge(queue)
            except connection.channel_errors:
                pass  # never declared: nothing to lose
            finally:
                if channel.is_open:
                    channel.close()


def worker_args(
    *,
    concurrency: int = 2,
    beat: bool = False,
    queues: str = "transfers,webhooks",
    hostname: str | None = None,
) -> list[str]:
    # Tests start and kill many workers side by side: unique names keep Celery from
    # warning about duplicates, and gossip/mingle would only slow start-up.
    extra = ["--without-gossip", "--without-mingle"]
    if beat:
        extra += ["--beat", "--schedule", tempfile.mktemp(prefix="settle-beat-")]  # noqa: S306
    return processes.worker_argv(
        queues=queues.split(","),
        concurrency=concurrency,
        hostname=hostname or f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
        extra=extra,
    )


@contextmanager
def running_worker(
    env: dict[str, str] | None = None,
    *,
    concurrency: int = 2,
    beat: bool = False,
    queues: str = "transfers,webhooks",
    hostname: str | None = None,
) -> Iterator[Process]:
    process = Process(
        "worker",
        worker_args(concurrency=concurrency, beat=beat, queues=queues, hostname=hostname),
        env or dict(os.environ),
    )
    try:
        process.wait_for_log("ready.")
        yield process
    finally:
        process.stop()


def start_gateway(env: dict[str, str], *, port: int, web_processes: int = 1) -> Process:
    """`settle serve web` on 127.0.0.1:`port`, answering /healthz when this returns."""
    process = Process(
        "gateway",
        processes.serve_argv("web"),
        gateway_env(env, port=port, processes=web_processes),
    )
    try:
        process.wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
    except BaseException:
        process.stop()
        raise
    return process


@contextmanager
def running_beat(env: dict[str, str], *, schedule: str) -> Iterator[Process]:
    """`settle serve beat`'s command line with its own schedule file."""
    process = Process("beat", processes.beat_argv(schedule=schedule), env)
    try:
        yield process
    finally:
        process.stop()


@contextmanager
def running_gateway(env: dict[str, str] | None = None, *, web_processes: int = 1) -> Iterator[str]:
    """`settle serve web` on a free port; yields its base URL."""
    port = free_port()
    process = start_gateway(env or dict(os.environ), port=port, web_processes=web_processes)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


# What a checkout needs for `make run`: the rest (var/) is created by the run itself.
_CHECKOUT_FILES = ("Makefile", "Procfile", "pyproject.toml", "constraints.txt", ".venv")


def make_run_checkout(directory: Path) -> Path:
    """A directory where `make run` runs as in this checkout, with a var/ of its own:
    symlinks to the Makefile, Procfile, project files and the installed .venv."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in _CHECKOUT_FILES:
        link = directory / name
        if not link.exists():
            link.symlink_to(REPOSITORY / name)
    return directory


@dataclass
class MakeRun:
    """`make run` in a checkout, as someone starts it: the make process is the child."""

    checkout: Path
    process: Process
    http_port: int
    flower_port: int

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_until_ready(self, timeout: float = 240.0) -> None:
        self.process.wait_for_log("Settle is ready", timeout=timeout)

    def signal_make(self, sig: int, timeout: float = 90.0) -> int:
        """Send `sig` to the make process alone (not its group) and wait for it to end;
        if it does not, fail with the end of the run's log (which process kept running)."""
        self.process.popen.send_signal(sig)
        try:
            return self.process.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"make run did not stop within {timeout:.0f} s of signal {sig}; make's signal "
                f"state: {_signal_state(self.process.popen.pid)}; its log ends:\n"
                + self.process.log()[-6000:]
            ) from None


def _signal_state(pid: int) -> str:
    """The State and Sig* lines of /proc/<pid>/status (pending, blocked, ignored, caught)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError as exc:
        return f"unreadable ({exc})"
    return "; ".join(line for line in lines if line.startswith(("State", "Sig", "ShdPnd")))


@contextmanager
def running_make_run(checkout: Path, **settings: str) -> Iterator[MakeRun]:
    """`make run` in `checkout` (see make_run_checkout) on free ports, with the embedded
    servers (the run's URLs and SETTLE_* variables are not passed on) and one process
    per kind, plus `settings` (SETTLE_* variables). Stopped by the whole process group
    at the end if the test has not stopped it."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("SETTLE_")
        and name not in ("DATABASE_URL", "REDIS_URL", "FLOWER_BASIC_AUTH")
    }
    http_port, flower_port = free_port(), free_port()
    env.update(
        SETTLE_HTTP_PORT=str(http_port),
        SETTLE_FLOWER_PORT=str(flower_port),
        SETTLE_WEB_PROCESSES="1",
        SETTLE_WORKER_CONCURRENCY="1",
        SETTLE_WEBHOOK_CONCURRENCY="4",
        **settings,
    )
    # As someone starts it in a terminal, even when the suite runs as a background job.
    process = Process(
        "make-run", ["make", "-C", str(checkout), "run"], env, as_from_a_terminal=True
    )
    try:
        yield MakeRun(checkout, process, http_port, flower_port)
    finally:
        process.stop(signal.SIGINT, timeout=90)  # like Ctrl-C in its terminal
