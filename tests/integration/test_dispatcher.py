"""The webhook dispatcher sleeps until told: a NOTIFY on commit wakes it at once, a
rolled-back one does not, the next due time wakes it, and stop() ends a long wait."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from domain.db import asyncpg_dsn
from domain.repositories import webhooks as webhooks_repo
from domain.services.webhooks import DUE_CHANNEL
from workers.dispatcher import Dispatcher


class Calls:
    """A dispatch function that records when it ran and says when the next one is due."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.next_due: datetime | None = None
        self.changed = threading.Condition()

    def __call__(self) -> tuple[int, datetime | None]:
        with self.changed:
            self.at.append(time.monotonic())
            self.changed.notify_all()
        return 0, self.next_due

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.at) >= count, timeout)


def _dispatcher(settings, calls: Calls, *, max_wait: float = 60.0) -> Dispatcher:
    return Dispatcher(
        dsn=asyncpg_dsn(settings.database_url),
        channel=DUE_CHANNEL,
        dispatch=calls,
        max_wait=max_wait,
    )


def _notify(session_factory, *, commit: bool) -> None:
    with session_factory() as session:
        webhooks_repo.notify(session, DUE_CHANNEL)
        session.commit() if commit else session.rollback()


def test_a_committed_notify_wakes_the_dispatcher_and_a_rolled_back_one_does_not(
    settings, session_factory
):
    calls = Calls()
    dispatcher = _dispatcher(settings, calls)
    dispatcher.start()
    try:
        assert calls.wait_for(1, timeout=15), "the dispatcher never ran"
        time.sleep(0.3)  # listening
        _notify(session_factory, commit=False)
        assert not calls.wait_for(2, timeout=1.5), "a rolled-back NOTIFY woke it"
        sent = time.monotonic()
        _notify(session_factory, commit=True)
        assert calls.wait_for(2, timeout=5), "a committed NOTIFY did not wake it"
        assert calls.at[1] - sent < 2  # not the 60 s max wait
    finally:
        started = time.monotonic()
        dispatcher.stop()
        assert time.monotonic() - started < 5, "stop() waited for the long sleep"


def test_the_dispatcher_wakes_when_the_next_delivery_falls_due(settings):
    calls = Calls()
    calls.next_due = datetime.now(UTC) + timedelta(seconds=1)
    dispatcher = _dispatcher(settings, calls)
    dispatcher.start()
    try:
        assert calls.wait_for(1, timeout=15)
        calls.next_due = None
        assert calls.wait_for(2, timeout=5), "the due time did not wake it"
        assert calls.at[1] - calls.at[0] >= 0.5
    finally:
        dispatcher.stop()


def test_the_dispatcher_survives_a_failing_round(settings):
    failures = {"left": 1}
    calls = Calls()

    def flaky() -> tuple[int, datetime | None]:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("database went away")
        return calls()

    dispatcher = Dispatcher(
        dsn=asyncpg_dsn(settings.database_url), channel=DUE_CHANNEL, dispatch=flaky, max_wait=60
    )
    dispatcher.start()
    try:
        assert calls.wait_for(1, timeout=15), "no round after the failure"
    finally:
        dispatcher.stop()
