"""The workers' Celery consumer: Celery's own, made to survive a Redis broker dying mid-read.

Celery 5.7 handles a lost broker connection by `collect()`-ing the connection and
then `close()`-ing it. With the Redis transport, when the first close of the
connection's default channel fails (the fan-out queue it deletes, or the read it
finishes, hits the dead server), `collect()` still detaches the transport; the second
close then tries again, finds no transport to build a Redis pool from and raises
`AttributeError`. Celery treats that as an unrecoverable error and the whole worker
exits, so one Redis restart could take every worker down (seen in the fault matrix:
"redis SIGKILLed, no persistence", about one run in three).

The fix is narrow: once `collect()` has detached the transport, the connection forgets
its default channel. Nothing is lost: `collect()` already closed every channel it could,
and the unacknowledged message comes back from Redis's unacked index (visibility
timeout) or, for a drain, is covered by the sweeper. Selected by `worker_consumer`
in workers/celery_app.py.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer


def forget_default_channel_after_collect(connection: Any) -> None:
    """Make `connection.collect()` drop the default channel once it detached the transport,
    so a later `connection.close()` does not close that channel a second time."""
    collect = connection.collect

    def collect_then_forget(socket_timeout: float | None = None) -> None:
        try:
            collect(socket_timeout)
        finally:
            if connection._transport is None:
                connection._default_channel = None

    connection.collect = collect_then_forget


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, with `forget_default_channel_after_collect` on a lost connection."""

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        if self.connection is not None:
            forget_default_channel_after_collect(self.connection)
        super().on_connection_error_after_connected(exc)
