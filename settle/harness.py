"""Running Settle's processes as children with their output in log files.

Used by the e2e tests (tests/processes.py) and the bench (bench/), which must not
import from tests/. Processes are started with the same argv as `settle serve NAME`
(settle/processes.py), so what is tested and measured is what the Procfile runs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import redis
from sqlalchemy import create_engine, make_url, text

from domain.db_roles import RoleUrls, provision_roles


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _default_interrupts() -> None:
    """In the child before exec: SIGINT and SIGQUIT back to their defaults."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


class Process:
    """A child in its own session (so a signal reaches its whole process group),
    logging to a temp file that is removed on stop unless SETTLE_KEEP_TEST_LOGS is set.

    `as_from_a_terminal`: SIGINT and SIGQUIT at their defaults in the child, whatever this
    process inherited. A shell without job control starts background jobs with both
    ignored (`nohup make test &`, a CI runner), exec keeps ignored signals ignored, and
    GNU make leaves an inherited ignored SIGINT ignored: a `make run` started from there
    could not be stopped by a SIGINT to make."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], *, as_from_a_terminal: bool = False
    ) -> None:
        self.name = name
        self.args = args
        self.log_path = Path(tempfile.mkstemp(prefix=f"settle-{name}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(  # noqa: S603
            args,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_interrupts if as_from_a_terminal else None,
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


def create_database(server_url: str, prefix: str = "settle_bench") -> tuple[str, RoleUrls]:
    """A new database, owned by an owner role; Settle runs as an app role, as in
    production (domain/db_roles.py). Not migrated yet: see `migrated_database`."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    execute_as_admin(server_url, f'CREATE DATABASE "{name}"')
    roles = provision_roles(
        server_url,
        database=name,
        owner=f"{name}_owner",
        owner_password=secrets.token_urlsafe(16),
        app=f"{name}_app",
        app_password=secrets.token_urlsafe(16),
    )
    return name, roles


def drop_database(server_url: str, name: str) -> None:
    """The database and its two roles."""
    execute_as_admin(
        server_url,
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
        *(f'DROP ROLE IF EXISTS "{role}"' for role in (f"{name}_owner", f"{name}_app")),
    )


@contextmanager
def migrated_database(server_url: str, prefix: str) -> Iterator[tuple[str, RoleUrls]]:
    """A database of its own (its name, and its owner's and app role's URLs), migrated,
    for a stack that must not share one: the bench's, or a test stack with settings of
    its own (every worker that consumes the webhooks queue claims due deliveries from
    its whole database, with its own settings). Dropped afterwards, with its roles."""
    from domain.migrate import migrate

    name, roles = create_database(server_url, prefix)
    try:
        for warning in migrate(owner_url=roles.owner_url, app_url=roles.app_url):
            raise RuntimeError(f"database roles: {warning}")
        yield name, roles
    finally:
        drop_database(server_url, name)


def delete_redis_keys(redis_url: str, prefix: str) -> None:
    """Everything a run wrote under its key prefix (Celery queues included)."""
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


# RabbitMQ administration goes through `rabbitmqctl` on the broker's host (it needs the
# Erlang cookie: root or the rabbitmq user), as the management HTTP API may be off.
RABBITMQCTL_TIMEOUT_SECONDS = 120


def rabbitmqctl(*args: str) -> str:
    """Run `rabbitmqctl -q ARGS` and return its output; raises if it fails."""
    executable = shutil.which("rabbitmqctl")
    if executable is None:
        raise RuntimeError("rabbitmqctl is not on PATH: run where the RabbitMQ server runs")
    # A fixed executable from PATH with list arguments, no shell.
    done = subprocess.run(  # noqa: S603  # nosec B603
        [executable, "-q", *args],
        capture_output=True,
        text=True,
        timeout=RABBITMQCTL_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


def rabbitmq_vhost_url(server_url: str, vhost: str) -> str:
    """`server_url` (amqp://user:pw@host:port/...) pointing at `vhost`."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def create_rabbitmq_vhost(server_url: str, vhost: str) -> str:
    """A new, empty vhost that the URL's user may use fully; returns its URL."""
    user = urlsplit(server_url).username or "guest"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    return rabbitmq_vhost_url(server_url, vhost)


def delete_rabbitmq_vhost(vhost: str) -> None:
    """The vhost with every queue, exchange and message in it (its connections are closed)."""
    rabbitmqctl("delete_vhost", vhost)


def rabbitmq_rows(command: str, *columns: str, vhost: str) -> list[dict[str, str]]:
    """`rabbitmqctl COMMAND COLUMNS...` as {column: value} rows of `vhost` only.

    list_queues takes `-p VHOST`; list_connections and list_channels list every vhost
    (with a `vhost` column), so their rows are filtered here."""
    if command == "list_queues":
        output = rabbitmqctl(command, "-p", vhost, "--no-table-headers", *columns)
        return [dict(zip(columns, line.split("\t"), strict=True)) for line in output.splitlines()]
    wanted = ("vhost", *columns)
    output = rabbitmqctl(command, "--no-table-headers", *wanted)
    rows = [dict(zip(wanted, line.split("\t"), strict=True)) for line in output.splitlines()]
    return [row for row in rows if row["vhost"] == vhost]


def close_rabbitmq_connections(vhost: str, reason: str) -> None:
    """Close every client connection on `vhost`, and no other vhost's."""
    rabbitmqctl("close_all_connections", "--vhost", vhost, reason)
