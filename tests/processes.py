"""Starting the real gateway and Celery worker as subprocesses for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"settle-{name}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            args, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not log {needle!r}:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()
        if not os.environ.get("SETTLE_KEEP_TEST_LOGS"):
            self.log_path.unlink(missing_ok=True)


def worker_args(
    *, concurrency: int = 2, beat: bool = False, queues: str = "transfers,webhooks"
) -> list[str]:
    args = [
        str(BIN / "celery"),
        "-A",
        "workers.celery_app",
        "worker",
        "-Q",
        queues,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--hostname",
        f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
    ]
    if beat:
        args += ["--beat", "--schedule", tempfile.mktemp(prefix="settle-beat-")]  # noqa: S306
    return args


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
def running_gateway(env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    process = Process(
        "gateway",
        [
            str(BIN / "uvicorn"),
            "--factory",
            "gateway.app:app_factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        env or dict(os.environ),
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start:\n{process.log()[-4000:]}")
            time.sleep(0.1)
        yield base_url
    finally:
        process.stop()
