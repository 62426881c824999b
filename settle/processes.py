"""The command line of every long-running Settle process, defined once.

The Procfile, docker-compose.yml, the Dockerfile, the e2e tests and the bench all
start processes as `settle serve NAME`; this module turns the settings (ports,
concurrency, hostnames, the beat schedule...) into each process's argv. `web` is the
exception that has no single argv: `settle serve web` supervises one gateway process
per core (settle/web.py), each of which runs `web_child_argv()`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from settle.broker import TRANSFERS_QUEUE, WEBHOOKS_QUEUE
from settle.config import Settings, cpu_count

NAMES = ("web", "worker", "webhooks", "beat", "flower")
CELERY_APP = "workers.celery_app"
GATEWAY_FACTORY = "gateway.app:app_factory"
FLOWER_AUTH_VARIABLE = "FLOWER_BASIC_AUTH"


class ProcessConfigError(Exception):
    """A process cannot start as configured (e.g. Flower without credentials)."""


def web_processes(settings: Settings) -> int:
    return settings.web_processes or cpu_count()


def worker_concurrency(settings: Settings) -> int:
    return settings.worker_concurrency or cpu_count()


def settle_argv(*args: str) -> list[str]:
    """`settle ARGS` with this interpreter, so it works without the venv on PATH."""
    return [sys.executable, "-m", "settle.cli", *args]


def serve_argv(name: str) -> list[str]:
    """What the Procfile's `settle serve NAME` runs; tests and the bench start this."""
    if name not in NAMES:
        raise ValueError(f"unknown process {name!r}; expected one of {', '.join(NAMES)}")
    return settle_argv("serve", name)


def web_child_argv() -> list[str]:
    """One gateway process, as the `web` supervisor starts it (one per core)."""
    return settle_argv("serve", "web", "--single")


def celery_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", CELERY_APP, *args]


def worker_argv(
    *,
    queues: Sequence[str],
    concurrency: int,
    hostname: str,
    loglevel: str = "INFO",
    extra: Sequence[str] = (),
) -> list[str]:
    return celery_argv(
        "worker",
        "-Q",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        # Named by queue, so `celery inspect`, Flower and the logs tell them apart.
        "--hostname",
        hostname,
        *extra,
    )


def beat_argv(*, schedule: str, loglevel: str = "INFO") -> list[str]:
    return celery_argv("beat", "--loglevel", loglevel, "--schedule", schedule)


def flower_argv(*, address: str, port: int) -> list[str]:
    # No --basic-auth: Flower reads FLOWER_BASIC_AUTH from its environment itself
    # (every option has a FLOWER_* variable), so the password never shows in `ps`.
    # settle.flower puts every Flower page, /metrics and /healthcheck included,
    # behind that authentication before handing over to celery's command line.
    return [
        sys.executable,
        "-m",
        "settle.flower",
        "flower",
        f"--address={address}",
        f"--port={port}",
    ]


def argv(name: str, settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """The argv that `settle serve NAME` execs, for every process except `web`."""
    environ = os.environ if environ is None else environ
    if name == "worker":
        return worker_argv(
            queues=[TRANSFERS_QUEUE],
            concurrency=worker_concurrency(settings),
            hostname=f"{TRANSFERS_QUEUE}@%h",
            loglevel=settings.log_level,
        )
    if name == "webhooks":
        # Sending a webhook is waiting on someone else's server: threads, not one
        # process per concurrent send, so dozens can be in flight on a small machine.
        return worker_argv(
            queues=[WEBHOOKS_QUEUE],
            concurrency=settings.webhook_concurrency,
            hostname=f"{WEBHOOKS_QUEUE}@%h",
            loglevel=settings.log_level,
            extra=["--pool", "threads"],
        )
    if name == "beat":
        return beat_argv(schedule=settings.beat_schedule, loglevel=settings.log_level)
    if name == "flower":
        if not environ.get(FLOWER_AUTH_VARIABLE):
            raise ProcessConfigError(
                f"{FLOWER_AUTH_VARIABLE} must be set to user:password; Flower never runs "
                "without authentication"
            )
        return flower_argv(address=settings.flower_address, port=settings.flower_port)
    if name == "web":
        raise ValueError("`web` is supervised, not exec'd: see settle.web")
    raise ValueError(f"unknown process {name!r}; expected one of {', '.join(NAMES)}")
