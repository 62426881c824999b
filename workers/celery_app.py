"""The Celery application of the workers and beat, with the settings that make it crash-safe.

- acks_late + reject_on_worker_lost: a message is acknowledged only after its
  task finished, so a SIGKILLed worker's message goes back to the queue. That
  is safe because draining is idempotent (state is re-read under row locks).
- prefetch 1: a worker holds at most one unacknowledged message per process.
- visibility timeout (settle/broker.py) far above the task time limit, so Redis
  never re-delivers a message that is still being worked on.
- the settings-derived part (broker, queues, beat schedule) is read when Celery first
  needs its configuration, so importing this module needs no environment.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from settle.broker import (
    DISPATCH_WEBHOOKS_TASK,
    PURGE_IDEMPOTENCY_TASK,
    SWEEP_PENDING_TASK,
    TRANSFERS_QUEUE,
    VERIFY_LEDGER_TASK,
    WEBHOOKS_QUEUE,
    celery_config,
)
from settle.config import Settings, get_settings

SWEEP_EXPIRES_SECONDS = 60

app = Celery("settle")
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
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
        "dispatch-due-webhooks": {
            "task": DISPATCH_WEBHOOKS_TASK,
            "schedule": settings.webhook_dispatch_interval_seconds,
            "options": {
                "queue": WEBHOOKS_QUEUE,
                "expires": settings.webhook_dispatch_interval_seconds,
            },
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


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # Forked pool children must not reuse the parent's database connections.
    from workers import resources

    resources.reset()


@worker_process_shutdown.connect
def _close_connections(**_: Any) -> None:
    from workers import resources

    resources.dispose()


logging.getLogger("settle").setLevel(logging.INFO)
