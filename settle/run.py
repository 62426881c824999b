"""`make run`: one careful host for the whole stack in this checkout.

It starts embedded PostgreSQL/Redis when no URLs are given, migrates, runs the Procfile
under honcho, and prints the banner (real ports, Flower's credentials) once every
process answers. It is careful about three things:

* **One per checkout.** `var/run.lock` is held with flock(2) for the whole run; a second
  `make run` in the same directory is refused before it touches anything (it would
  otherwise share the database, start a second Redis on the same socket and data file,
  and delete `var/run.env` under the first when it stops). The lock goes with the
  process, so a crashed run never leaves a stale lock behind.
* **Signals.** SIGINT (Ctrl-C, or `kill -INT`) and SIGTERM stop honcho's processes, then
  the embedded servers, remove `var/run.env`, and exit 0: stopping is not a failure. GNU
  make forwards SIGTERM to its child (this process), but not SIGINT, and waits for its
  child before dying of the signal itself; so while make is our parent, a watcher
  notices make handling either signal (it blocks the signal in its handler: SigBlk in
  /proc) and stops everything as if the signal had come here. make's own exit status
  is then the signal's (GNU make re-raises it on itself once its child is gone), with
  no "Error" line, since this process exited 0.
* **The banner** comes once the gateway is ready (`/readyz`), both Celery workers answer
  a ping and Flower listens, with the ports the processes really use.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO

from dotenv import load_dotenv

from settle import metrics
from settle.config import RUN_ENV_FILE, Settings

ROOT = Path.cwd()
VAR = ROOT / "var"
LOCK_FILE = VAR / "run.lock"
FLOWER_CREDENTIALS_FILE = VAR / "flower-basic-auth"
READY_TIMEOUT_SECONDS = 180.0
EXPECTED_WORKERS = ("transfers@", "webhooks@")

logger = logging.getLogger("settle.run")


class AlreadyRunning(Exception):
    """Another `make run` holds this checkout's lock."""


def acquire_lock(path: Path) -> IO[str]:
    """Hold `path` exclusively for this process's life (flock); AlreadyRunning if taken.

    The file keeps the holder's pid, for the refusal message; the lock itself, not the
    file's existence, is what counts, so a crashed run leaves nothing stale.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise AlreadyRunning(holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _flower_credentials() -> str:
    """A random Flower password per checkout, kept in var/ (never in the repository)."""
    if not FLOWER_CREDENTIALS_FILE.exists():
        VAR.mkdir(parents=True, exist_ok=True)
        FLOWER_CREDENTIALS_FILE.write_text(f"settle:{secrets.token_urlsafe(12)}\n")
        FLOWER_CREDENTIALS_FILE.chmod(0o600)
    return FLOWER_CREDENTIALS_FILE.read_text().strip()


class Stopper:
    """Turns SIGINT/SIGTERM (ours, or make's while make is our parent) into one request
    to stop: an event, and honcho terminated once it runs."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.honcho: subprocess.Popen[bytes] | None = None
        self.signal_name = ""

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        parent = os.getppid()
        if _process_name(parent) == "make":
            threading.Thread(target=self._watch_make, args=(parent,), daemon=True).start()

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        self.request(signal.Signals(signum).name)

    def request(self, why: str) -> None:
        if self.requested.is_set():
            return
        self.signal_name = why
        self.requested.set()
        honcho = self.honcho
        if honcho is not None and honcho.poll() is None:
            # Honcho may have had the same SIGINT from the terminal: terminating twice is
            # harmless (it sends its processes SIGTERM once, SIGKILL after 5 s).
            honcho.send_signal(signal.SIGTERM)

    def _watch_make(self, parent: int) -> None:
        while not self.requested.is_set():
            if os.getppid() != parent:
                self.request("make exited")
                return
            blocked = _blocked_signals(parent)
            for signum in (signal.SIGINT, signal.SIGTERM):
                if blocked & (1 << (signum - 1)):
                    self.request(f"{signum.name} (to make)")
                    return
            time.sleep(0.2)


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _blocked_signals(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def banner(settings: Settings, *, flower_auth: str, from_file: bool, note: str = "") -> str:
    from settle.operator import api_url, reachable_host

    api = api_url(settings)
    flower_host = reachable_host(settings.flower_address)
    user, _, password = flower_auth.partition(":")
    where = "var/flower-basic-auth" if from_file else "FLOWER_BASIC_AUTH"
    lines = [
        "",
        "  Settle is ready" + (f" ({note})" if note else ""),
        f"  API       {api}    docs: {api}/docs   (and /redoc)",
        f"  Flower    http://{flower_host}:{settings.flower_port}    "
        f"user {user!r}, password {password!r}  (from {where})",
        f"  Metrics   {api}/metrics",
        f"  CLI       .venv/bin/settle status    (finds this run through {RUN_ENV_FILE})",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def _wait_until_ready(settings: Settings, stopper: Stopper) -> str:
    """'' once every process answers; otherwise what is still missing at the deadline."""
    from settle import operator  # celery and httpx: only once the stack is starting

    api = operator.api_url(settings)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    missing = "nothing checked yet"
    while not stopper.requested.is_set():
        if stopper.honcho is not None and stopper.honcho.poll() is not None:
            return "a process stopped during start-up"
        found = operator.probe_processes(settings, api)
        absent = [
            prefix.rstrip("@") + " worker"
            for prefix in EXPECTED_WORKERS
            if not any(name.startswith(prefix) for name in found.workers)
        ]
        problems = [
            *(["gateway " + found.gateway] if found.gateway != "ready" else []),
            *(absent if found.redis == "ok" else [f"Redis {found.redis}"]),
            *(["Flower " + found.flower] if not found.flower.startswith("listening") else []),
        ]
        if not problems:
            return ""
        missing = "; ".join(problems)
        if time.monotonic() > deadline:
            return f"not ready after {READY_TIMEOUT_SECONDS:.0f} s: {missing}"
        stopper.requested.wait(1.0)
    return missing


def _write_run_env(path: Path, settings: Settings) -> None:
    """What `settle ...` in another terminal needs to find this run: the URLs, and the
    ports and prefix this run uses, whether they came from the environment or .env."""
    values = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SETTLE_MIGRATION_DATABASE_URL": settings.migration_database_url,
        "SETTLE_REDIS_PREFIX": settings.redis_prefix,
        "SETTLE_HTTP_HOST": settings.http_host,
        "SETTLE_HTTP_PORT": str(settings.http_port),
        "SETTLE_FLOWER_ADDRESS": settings.flower_address,
        "SETTLE_FLOWER_PORT": str(settings.flower_port),
    }
    path.write_text(
        "# written by `make run` while it runs; removed when it stops\n"
        + "".join(f"{name}={value}\n" for name, value in values.items() if value)
    )
    path.chmod(0o600)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # The readiness probe asks every second; its requests are not news.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        lock = acquire_lock(LOCK_FILE)
    except AlreadyRunning as exc:
        print(
            f"settle: `make run` is already running in this checkout (pid {exc}); it holds "
            f"{LOCK_FILE.relative_to(ROOT)}. Use that one (its banner has the URLs; "
            "`.venv/bin/settle status` shows what runs), or stop it first: Ctrl-C in its "
            f"terminal, or `kill -TERM {exc}`. To run two at once, use two checkouts with "
            "different SETTLE_HTTP_PORT and SETTLE_FLOWER_PORT.",
            file=sys.stderr,
        )
        return 2
    stopper = Stopper()
    stopper.install()
    try:
        return _run(stopper)
    finally:
        lock.close()  # releases the flock


def _run(stopper: Stopper) -> int:
    from domain.migrate import migrate
    from settle.devservices import start_missing_services, stop_all

    # Into the environment of every Procfile process; the real environment wins. The same
    # parser as the Settings class (pydantic-settings reads .env with python-dotenv), so
    # quoting, `export` and ${VAR} mean the same to both.
    load_dotenv(ROOT / ".env", override=False)
    os.environ.setdefault("SETTLE_ENVIRONMENT", "development")
    flower_from_file = not os.environ.get("FLOWER_BASIC_AUTH")
    os.environ.setdefault("FLOWER_BASIC_AUTH", _flower_credentials())
    # Every process writes its metrics here and the gateway's /metrics sums them
    # (settle/metrics.py); emptied at each start, as prometheus_client requires.
    os.environ.setdefault(metrics.MULTIPROC_VARIABLE, str(VAR / "metrics"))
    metrics.reset_multiprocess_dir(Path(os.environ[metrics.MULTIPROC_VARIABLE]))
    # The Procfile runs `settle serve NAME`; make sure ours (in this venv) is found.
    venv_bin = str(Path(sys.executable).parent)
    os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    run_env = ROOT / RUN_ENV_FILE
    # We hold the lock, so a run.env here is a crashed run's: its URLs and ports must not
    # leak into this run's settings (Settings reads the file).
    run_env.unlink(missing_ok=True)
    services = start_missing_services(VAR, roles=True)
    try:
        if stopper.requested.is_set():
            return 0
        settings = Settings()  # what the Procfile's processes will read
        _write_run_env(run_env, settings)
        for warning in migrate(
            owner_url=settings.owner_database_url, app_url=settings.database_url
        ):
            logger.warning("database roles: %s", warning)
        if stopper.requested.is_set():
            return 0
        honcho = Path(sys.executable).parent / "honcho"
        # Same process group: Ctrl-C in the terminal reaches honcho directly too.
        stopper.honcho = subprocess.Popen([str(honcho), "start", "-f", str(ROOT / "Procfile")])  # noqa: S603
        if stopper.requested.is_set():  # a signal while honcho was being started
            stopper.honcho.send_signal(signal.SIGTERM)
        else:
            note = _wait_until_ready(settings, stopper)
            if not stopper.requested.is_set():
                print(
                    banner(
                        settings,
                        flower_auth=os.environ["FLOWER_BASIC_AUTH"],
                        from_file=flower_from_file,
                        note=note,
                    ),
                    flush=True,
                )
        returncode = stopper.honcho.wait()
        if stopper.requested.is_set():
            logger.info("stopped (%s); stopping the embedded servers", stopper.signal_name)
            return 0
        # A process died on its own: honcho stopped the others; that is a failure.
        return returncode or 1
    finally:
        run_env.unlink(missing_ok=True)
        stop_all(services)


if __name__ == "__main__":
    sys.exit(main())
