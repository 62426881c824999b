"""Starting the real gateway and Celery workers as subprocesses for end-to-end tests.

The command lines come from settle/processes.py (what `settle serve NAME` runs); the
subprocess plumbing from settle/harness.py, which the bench shares.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from settle import processes
from settle.harness import Process, free_port, gateway_env

__all__ = [
    "MakeRun",
    "Process",
    "free_port",
    "make_run_checkout",
    "running_gateway",
    "running_make_run",
    "running_worker",
    "worker_args",
]

REPOSITORY = Path(__file__).resolve().parent.parent


def worker_args(
    *, concurrency: int = 2, beat: bool = False, queues: str = "transfers,webhooks"
) -> list[str]:
    # Tests start and kill many workers side by side: unique names keep Celery from
    # warning about duplicates, and gossip/mingle would only slow start-up.
    extra = ["--without-gossip", "--without-mingle"]
    if beat:
        extra += ["--beat", "--schedule", tempfile.mktemp(prefix="settle-beat-")]  # noqa: S306
    return processes.worker_argv(
        queues=queues.split(","),
        concurrency=concurrency,
        hostname=f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
        extra=extra,
    )


@contextmanager
def running_worker(
    env: dict[str, str] | None = None,
    *,
    concurrency: int = 2,
    beat: bool = False,
    queues: str = "transfers,webhooks",
) -> Iterator[Process]:
    process = Process(
        "worker",
        worker_args(concurrency=concurrency, beat=beat, queues=queues),
        env or dict(os.environ),
    )
    try:
        process.wait_for_log("ready.")
        yield process
    finally:
        process.stop()


@contextmanager
def running_gateway(env: dict[str, str] | None = None, *, web_processes: int = 1) -> Iterator[str]:
    """`settle serve web` on a free port; yields its base URL."""
    port = free_port()
    process = Process(
        "gateway",
        processes.serve_argv("web"),
        gateway_env(env or dict(os.environ), port=port, processes=web_processes),
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        process.wait_for_http(f"{base_url}/healthz", timeout=30)
        yield base_url
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
        """Send `sig` to the make process alone (not its group) and wait for it to end."""
        self.process.popen.send_signal(sig)
        return self.process.popen.wait(timeout=timeout)


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
    process = Process("make-run", ["make", "-C", str(checkout), "run"], env)
    try:
        yield MakeRun(checkout, process, http_port, flower_port)
    finally:
        process.stop(signal.SIGINT, timeout=90)  # like Ctrl-C in its terminal
