"""The Celery application of the workers and beat, with the settings that make it crash-safe.

- acks_late + reject_on_worker_lost: a message is acknowledged only after its
  task finished, so a SIGKILLed worker's message goes back to the queue. That
  is safe because draining is idempotent (state is re-read under row locks).
- prefetch 1: a worker holds at most one unacknowledged message per process.
- visibility timeout (settle/broker.py) far above the task time limit, so Redis
  never re-delivers a message that is still being worked on. On RabbitMQ (quorum
  queues, publisher confirms) an unacknowledged message comes back when its
  consumer's connection closes instead.
- beat is a singleton by construction: every beat asks PostgreSQL for an advisory
  lock before each tick and only the holder sends (workers/beat.py).
- the settings-derived part (broker, queues, beat schedule) is read when Celery first
  needs its configuration, so importing this module needs no environment.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, bootsteps
from celery.signals import (
    beat_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from domain.context import request_id_var
from settle import logs
from settle.broker import (
    PURGE_IDEMPOTENCY_TASK,
    SWEEP_PENDING_TASK,
    TRANSFERS_QUEUE,
    VERIFY_LEDGER_TASK,
    WEBHOOKS_QUEUE,
    celery_config,
    redis_client_name,
)
from settle.config import Settings, get_settings

SWEEP_EXPIRES_SECONDS = 60

app = Celery("settle")
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    # Only the beat holding the PostgreSQL advisory lock sends anything.
    beat_scheduler="workers.beat:LeaderScheduler",
    # On a lost broker connection a running drain finishes; its message (never
    # acknowledged on the dead channel) is redelivered and the second drain finds the
    # work done under the row locks. Cancelling would only throw the work away.
    worker_cancel_long_running_tasks_on_connection_loss=False,
    # Celery's consumer, surviving a Redis broker that dies mid-read (see the module).
    worker_consumer="workers.broker_consumer:Consumer",
)


def beat_schedule(settings: Settings) -> dict[str, Any]:
    return {
        "sweep-pending-transfers": {
            "task": SWEEP_PENDING_TASK,
            "schedule": settings.sweep_interval_seconds,
            # Not `expires=interval`: behind a backlog of drains every sweep would expire
            # unrun, and stranded transfers would wait for the load to end. Sweeps are
            # idempotent, so a late one is harmless; a dropped one is not.
            "options": {"queue": TRANSFERS_QUEUE, "expires": SWEEP_EXPIRES_SECONDS},
        },
        "purge-idempotency-keys": {
            "task": PURGE_IDEMPOTENCY_TASK,
            "schedule": 3600.0,
            "options": {"queue": TRANSFERS_QUEUE, "expires": 3600},
        },
        "verify-ledger": {
            "task": VERIFY_LEDGER_TASK,
            "schedule": settings.verify_interval_seconds,
            "options": {"queue": TRANSFERS_QUEUE, "expires": settings.verify_interval_seconds},
        },
    }


def _settings_config() -> dict[str, Any]:
    # Celery calls this promise when its configuration is first needed (a worker
    # starting, a task sent), not at import, so importing the tasks reads no settings.
    # Not the `on_configure` signal: Celery logs and swallows a receiver's exception, so
    # bad settings would start a worker on the default broker instead of failing.
    settings = get_settings()
    return {
        **celery_config(settings),
        "beat_schedule": beat_schedule(settings),
        "task_time_limit": settings.task_time_limit_seconds,
        "task_soft_time_limit": settings.task_time_limit_seconds * 2 // 3,
    }


app.add_defaults(_settings_config)
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)


class WebhookDispatcherStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs the webhook dispatcher (workers/dispatcher.py) in every worker that consumes
    the webhooks queue, after its pool started (so no forked child inherits it)."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.dispatcher: Any = None

    def include_if(self, parent: Any) -> bool:
        return WEBHOOKS_QUEUE in parent.app.amqp.queues.consume_from

    def start(self, parent: Any) -> None:
        from domain.db import asyncpg_dsn
        from domain.services.webhooks import DUE_CHANNEL
        from workers.dispatcher import Dispatcher
        from workers.tasks import dispatch_due

        settings = get_settings()
        self.dispatcher = Dispatcher(
            dsn=asyncpg_dsn(settings.database_url),  # a plain libpq URL, as psycopg2 wants
            application_name=f"settle-worker {os.getpid()}",
            channel=DUE_CHANNEL,
            dispatch=dispatch_due,
            max_wait=settings.webhook_dispatch_max_wait_seconds,
        )
        self.dispatcher.start()

    def stop(self, parent: Any) -> None:
        if self.dispatcher is not None:
            self.dispatcher.stop()
            self.dispatcher = None


app.steps["worker"].add(WebhookDispatcherStep)


def name_broker_connections(role: str = "celery") -> None:
    """`settle-<role>-<pid>` for this process's Redis broker connections in CLIENT LIST:
    per process, so a count that grows says whose pool it is. Called as each process
    starts, before it connects: worker and beat, each pool child after the fork (before
    its first publish), Flower (settle/flower.py)."""
    if get_settings().uses_rabbitmq:
        return
    options = dict(app.conf.broker_transport_options or {})
    options["client_name"] = redis_client_name(role)
    app.conf.broker_transport_options = options


def _name_broker_connections(**_: Any) -> None:
    name_broker_connections()


# Connected before every other receiver of these signals (beat's sends a task at once).
worker_init.connect(_name_broker_connections, weak=False)
beat_init.connect(_name_broker_connections, weak=False)
worker_process_init.connect(_name_broker_connections, weak=False)


@beat_init.connect
def _verify_at_start(sender: Any = None, **_: Any) -> None:
    # The verify gauges must not read "never verified" for a whole interval after a
    # (re)start: beat queues one run as soon as it starts, then every interval.
    if not get_settings().verify_at_start:
        return
    try:
        app.send_task(VERIFY_LEDGER_TASK, queue=TRANSFERS_QUEUE)
    except Exception:
        logging.getLogger("settle.workers").warning(
            "could not queue the start-up verify run", exc_info=True
        )


@beat_init.connect
def _start_audit_sealer(sender: Any = None, **_: Any) -> None:
    # Sealing runs beside beat, not in the drains (workers/audit_sealer.py).
    from domain.uow import unit_of_work
    from workers import resources
    from workers.audit_sealer import AuditSealer

    AuditSealer(
        units=lambda: unit_of_work(resources.session_factory()),
        keys=get_settings().audit_keyring,
    ).start()


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # Forked pool children must not reuse the parent's database connections.
    from workers import resources

    resources.reset()


@worker_process_shutdown.connect
def _close_connections(**_: Any) -> None:
    from workers import resources

    resources.dispose()


@setup_logging.connect
def _logging(**_: Any) -> None:
    # Connected, so Celery leaves logging to us: its lines take Settle's format too.
    settings = get_settings()
    logs.configure(log_format=settings.log_format, level=settings.log_level)


@task_prerun.connect
def _bind_request_id(task: Any = None, **_: Any) -> None:
    # The request whose message started this task (a gateway wake-up), for its logs.
    request_id_var.set(logs.request_id_of(task.request) if task is not None else None)


@task_postrun.connect
def _unbind_request_id(**_: Any) -> None:
    request_id_var.set(None)
