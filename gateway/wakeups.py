"""Publishing engine wake-ups to the broker, by task name (the gateway never imports workers).

A failed publish is logged and swallowed on purpose: the transfer is already
committed, and the beat sweeper wakes any account whose pending transfers go stale.
"""

from __future__ import annotations

import logging
import uuid

from celery import Celery

from settle.broker import DRAIN_ACCOUNT_TASK, TRANSFERS_QUEUE, celery_config
from settle.config import Settings

logger = logging.getLogger("settle.gateway.wakeups")


class WakeupPublisher:
    def __init__(self, settings: Settings) -> None:
        self._celery = Celery("settle-gateway")
        self._celery.conf.update(celery_config(settings))

    def wake(self, account_id: uuid.UUID) -> bool:
        try:
            self._celery.send_task(
                DRAIN_ACCOUNT_TASK,
                args=[str(account_id)],
                queue=TRANSFERS_QUEUE,
                # Fail fast: a slow broker must not hold the 202; the sweeper covers us.
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
            )
        except Exception:
            logger.warning(
                "wake-up for account %s not published; sweeper will pick it up",
                account_id,
                exc_info=True,
            )
            return False
        return True

    def close(self) -> None:
        self._celery.close()
