"""Beat as a singleton by construction: only the holder of a PostgreSQL advisory lock sends.

Any number of beats may run (compose may scale it, a second host may start one as a
standby); each asks PostgreSQL for one session-level advisory lock, named after the
deployment's key prefix, before every tick. The one that holds it schedules as usual;
the others send nothing and ask again every FOLLOWER_POLL_SECONDS. The lock belongs
to the leader's database session, so when the leader dies or loses its connection,
PostgreSQL releases it and a standby takes over within one poll.

Celery's PersistentScheduler does the scheduling; only `tick` is wrapped. The check
runs right before the due tasks are sent, on a connection held in AUTOCOMMIT (never
idle in a transaction), so a leader that lost its session finds out before it sends.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.beat import PersistentScheduler
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from domain.db import make_engine
from domain.repositories import leadership
from settle.config import get_settings

logger = logging.getLogger("settle.beat")

# How often a standby beat asks for the lock (and so, at worst, how long after the
# leader's session ended a standby takes over).
FOLLOWER_POLL_SECONDS = 1.0


class Leadership:
    """One database session that holds (or keeps asking for) the beat lock."""

    def __init__(self, database_url: str, name: str) -> None:
        self.key = leadership.lock_key(f"beat:{name}")
        self._engine: Engine = make_engine(
            database_url,
            pool_size=1,
            max_overflow=0,
            pre_ping=False,
            application_name=f"settle-beat {os.getpid()}",
        )
        self._connection: Connection | None = None
        self.leading = False
        self._said: bool | None = None  # what the log last said (None: nothing yet)

    def check(self) -> bool:
        """True when this process leads now (taking the lock if it is free)."""
        try:
            if self._connection is None:
                self._connection = self._engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT"
                )
            connection = self._connection
            if self.leading:
                leading = leadership.still_leading(connection, self.key)
            else:
                leading = leadership.try_lead(connection, self.key)
        except DBAPIError:
            # The session (and with it any lock it held) is gone: lead no more until a
            # new session wins the lock again.
            logger.warning("beat lost its database session; standing by", exc_info=True)
            self._drop_connection()
            leading = False
        if leading != self._said:
            self._said = leading
            logger.info(
                "beat %s (lock %s)",
                "leads: sending due tasks" if leading else "stands by",
                self.key,
            )
        self.leading = leading
        return leading

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.invalidate()
                self._connection.close()
            except DBAPIError:
                logger.debug("closing the lost beat session failed", exc_info=True)
        self._connection = None

    def close(self) -> None:
        self._drop_connection()
        self._engine.dispose()
        self.leading = False


class LeaderScheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's persistent scheduler, ticking only while this beat holds the lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = get_settings()
        self.leadership = Leadership(settings.database_url, settings.redis_prefix)
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.leadership.check():
            return FOLLOWER_POLL_SECONDS
        interval: float = super().tick(*args, **kwargs)
        # A leader must notice a lost lock about as fast as a standby notices a free one.
        return min(interval, FOLLOWER_POLL_SECONDS) if interval else interval

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.leadership.close()
