"""Long-poll without polling: waiters sleep until PostgreSQL says their transfer finished,
or that they have new events.

The engine sends `NOTIFY settle_finished, '<id>,<id>,…'` (transfer and batch ids)
in the transaction that finishes them, and a trigger on `events` sends
`NOTIFY settle_events, '<user id>,…'` for every insert of events, so notifications
arrive only after commit. Each gateway process keeps ONE listening connection and wakes the
matching waiters; a waiter then reads its transfer once. If the listening
connection is lost, waiters fall back to re-reading every few seconds until it
is back. Concurrent waits are capped per user (per process) so one client
cannot hold thousands of requests open.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any

import asyncpg

from domain.repositories.engine import FINISHED_CHANNEL
from domain.repositories.events import EVENTS_CHANNEL

logger = logging.getLogger("settle.gateway.completions")

SAFETY_RECHECK_SECONDS = 5.0
RECONNECT_SECONDS = 1.0


class TooManyWaits(Exception):
    pass


def _events_key(user: str | uuid.UUID) -> str:
    # Its own namespace: a user id never wakes a waiter on a transfer id, or back.
    return f"events:{user}"


class Completions:
    def __init__(self, dsn: str, *, max_waits_per_user: int) -> None:
        self._dsn = dsn
        self._max = max_waits_per_user
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._per_user: dict[uuid.UUID, int] = defaultdict(int)
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="settle-completions")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn)
                await conn.add_listener(FINISHED_CHANNEL, self._notified)
                await conn.add_listener(EVENTS_CHANNEL, self._notified_events)
                self._listening.set()
                self._wake_all()  # anything that finished while we were away
                await self._until_closed(conn)
            except asyncio.CancelledError:
                if conn is not None:
                    await conn.close()
                raise
            except Exception:
                logger.warning("completion listener lost; reconnecting", exc_info=True)
            self._listening.clear()
            await asyncio.sleep(RECONNECT_SECONDS)

    @staticmethod
    async def _until_closed(conn: Any) -> None:
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _: closed.set())
        await closed.wait()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for key in payload.split(","):
            for event in self._waiters.get(key, ()):
                event.set()

    def _notified_events(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for user in payload.split(","):
            for event in self._waiters.get(_events_key(user), ()):
                event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    def waiting(
        self, user_id: uuid.UUID, ids: Collection[uuid.UUID]
    ) -> AbstractAsyncContextManager[asyncio.Event]:
        """Register before reading, so a completion between the read and the wait is not lost."""
        return self._waiting(user_id, [str(i) for i in ids])

    def waiting_for_events(self, user_id: uuid.UUID) -> AbstractAsyncContextManager[asyncio.Event]:
        """Like `waiting`, woken when `user_id` gets new events (the same per-user cap)."""
        return self._waiting(user_id, [_events_key(user_id)])

    @asynccontextmanager
    async def _waiting(self, user_id: uuid.UUID, keys: list[str]) -> AsyncIterator[asyncio.Event]:
        if self._per_user[user_id] >= self._max:
            raise TooManyWaits
        event = asyncio.Event()
        self._per_user[user_id] += 1
        for key in keys:
            self._waiters[key].add(event)
        try:
            yield event
        finally:
            self._per_user[user_id] -= 1
            if not self._per_user[user_id]:
                del self._per_user[user_id]
            for key in keys:
                self._waiters[key].discard(event)
                if not self._waiters[key]:
                    del self._waiters[key]

    async def sleep(self, event: asyncio.Event, timeout: float) -> bool:
        """Until notified or `timeout` passes (sooner while the listener is down).

        True when woken by a notification (or a reconnect, which may have missed some)."""
        if not self._listening.is_set():
            timeout = min(timeout, SAFETY_RECHECK_SECONDS)
        with suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=timeout)
        notified = event.is_set()
        event.clear()
        return notified
