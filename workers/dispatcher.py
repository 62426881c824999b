"""The webhook dispatcher: sends deliveries that fall due, woken by PostgreSQL, not a clock.

Immediate sends go out right after the engine's commit (a `deliver_webhooks` message
per endpoint). What is left for the dispatcher: retries (due at a time the schedule set),
redeliveries an owner or operator asked for (due now), and immediate sends that got
lost (due when their lease expires). It runs as a thread inside every worker that
consumes the webhooks queue (a Celery bootstep, workers/celery_app.py), so it adds no
task to Flower's history and no process to run:

- it claims what is due (leased, so several dispatchers never send one delivery
  twice), queues them (`deliver_webhooks`, per endpoint), and asks when the next pending
  delivery falls due;
- it then sleeps on its LISTEN connection until that time, a NOTIFY on
  `domain.services.webhooks.DUE_CHANNEL` (sent on commit by a redelivery or a newly
  scheduled retry), its stop signal, or `max_wait` (a delivery the engine created
  since, whose immediate send was lost, is not notified: this bounds its delay).

Idle, that is one small query every `max_wait` seconds and nothing else.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.extensions

logger = logging.getLogger("settle.workers.dispatcher")

RECONNECT_SECONDS = 5.0
# The dispatcher's result: (deliveries queued now, when the next one falls due or None).
Dispatch = Callable[[], tuple[int, datetime | None]]


class Dispatcher:
    def __init__(
        self,
        *,
        dsn: str,
        channel: str,
        dispatch: Dispatch,
        max_wait: float,
        application_name: str = "settle-dispatcher",
    ) -> None:
        self._dsn, self._channel, self._dispatch, self._max_wait = dsn, channel, dispatch, max_wait
        # A keyword, not in the URL: libpq does not read "+" in a URL query as a space.
        self._application_name = application_name
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # stop() writes here to end a wait at once
        self._thread: threading.Thread | None = None
        self.dispatched = 0  # deliveries queued so far (tests and logs)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="webhook-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def run(self) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                self._listen_and_dispatch()
            except Exception:
                # PostgreSQL restarting, the broker away: log once per outage, try again.
                if not failing:
                    logger.warning(
                        "webhook dispatcher failed; retrying every %ss",
                        RECONNECT_SECONDS,
                        exc_info=True,
                    )
                failing = True
                self._sleep(RECONNECT_SECONDS, None)
            else:
                failing = False

    def _listen_and_dispatch(self) -> None:
        conn: Any = psycopg2.connect(self._dsn, application_name=self._application_name)
        try:
            conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cursor:
                cursor.execute("LISTEN " + self._channel)
            logger.info("webhook dispatcher listening on %s", self._channel)
            while not self._stopping.is_set():
                # Listening before claiming: a NOTIFY sent meanwhile is not missed.
                conn.poll()
                conn.notifies.clear()
                queued, upcoming = self._dispatch()
                if queued:
                    self.dispatched += queued
                    logger.info("dispatcher queued %d due webhook delivery(ies)", queued)
                self._sleep(self._wait_until(upcoming), conn)
        finally:
            conn.close()

    def _wait_until(self, upcoming: datetime | None) -> float:
        if upcoming is None:
            return self._max_wait
        seconds = (upcoming - datetime.now(UTC)).total_seconds()
        return min(self._max_wait, max(0.0, seconds))

    def _sleep(self, seconds: float, conn: Any) -> None:
        watched: list[Any] = [self._wake_r] if conn is None else [self._wake_r, conn]
        if seconds > 0 and not self._stopping.is_set():
            select.select(watched, [], [], seconds)
