"""Running Settle's processes as children with their output in log files.

Used by the e2e tests (tests/processes.py) and the bench (bench/), which must not
import from tests/. Processes are started with the same argv as `settle serve NAME`
(settle/processes.py), so what is tested and measured is what the Procfile runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import redis
from sqlalchemy import create_engine, make_url, text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Process:
    """A child in its own session (so a signal reaches its whole process group),
    logging to a temp file that is removed on stop unless SETTLE_KEEP_TEST_LOGS is set."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.args = args
        self.log_path = Path(tempfile.mkstemp(prefix=f"settle-{name}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(  # noqa: S603
            args, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not log {needle!r}:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def wait_for_http(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer {url}:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        if not self._log.closed:
            self._log.close()
            if not os.environ.get("SETTLE_KEEP_TEST_LOGS"):
                self.log_path.unlink(missing_ok=True)
        return self.popen.returncode


def gateway_env(env: dict[str, str], *, port: int, processes: int | None) -> dict[str, str]:
    """`env` for `settle serve web` on 127.0.0.1:`port`; processes None: one per core."""
    env = {**env, "SETTLE_HTTP_HOST": "127.0.0.1", "SETTLE_HTTP_PORT": str(port)}
    env.setdefault("SETTLE_HTTP_ACCESS_LOG", "false")
    if processes is not None:
        env["SETTLE_WEB_PROCESSES"] = str(processes)
    else:
        env.pop("SETTLE_WEB_PROCESSES", None)
    return env


def execute_as_admin(server_url: str, *statements: str) -> None:
    """Statements that cannot run in a transaction (CREATE/DROP DATABASE, roles), on the
    server's `postgres` database, as the server URL's (superuser) role."""
    admin_url = make_url(server_url).set(database="postgres").render_as_string(hide_password=False)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        admin.dispose()


def delete_redis_keys(redis_url: str, prefix: str) -> None:
    """Everything a run wrote under its key prefix (Celery queues included)."""
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()
