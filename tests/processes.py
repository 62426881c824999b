"""Starting the real gateway and Celery workers as subprocesses for end-to-end tests.

The command lines come from settle/processes.py (what `settle serve NAME` runs); the
subprocess plumbing from settle/harness.py, which the bench shares.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from settle import processes
from settle.harness import Process, free_port, gateway_env

__all__ = [
    "Process",
    "free_port",
    "running_gateway",
    "running_worker",
    "start_gateway",
    "worker_args",
]


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
def running_gateway(env: dict[str, str] | None = None, *, web_processes: int = 1) -> Iterator[str]:
    """`settle serve web` on a free port; yields its base URL."""
    port = free_port()
    process = start_gateway(env or dict(os.environ), port=port, web_processes=web_processes)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()
