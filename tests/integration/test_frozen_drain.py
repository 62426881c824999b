"""A drain whose worker freezes cannot hold its locks for longer than the idle timeout.

Found by the fault matrix (tests/e2e/test_faults.py, the SIGSTOP case): a worker
frozen inside a drain's transaction kept its account and transfer locks, and every
other drain of those accounts waited on them until the worker was thawed. Now each
drain (and seal) transaction asks PostgreSQL to end it once it sits idle for
SETTLE_DRAIN_IDLE_TIMEOUT_SECONDS: the locks go, the frozen worker's next statement
fails (its batch rolled back, the task retries), and the other drains go on.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from domain.repositories import engine as engine_repo
from tests.factories import make_user

LOCK = text("SELECT id FROM users WHERE id = :id FOR NO KEY UPDATE")


def test_an_idle_drain_transaction_is_ended_and_its_locks_released(
    session_factory: sessionmaker[Session],
) -> None:
    user = make_user(session_factory)
    with session_factory() as frozen, session_factory() as other:
        engine_repo.end_if_idle(frozen, 0.5)
        frozen.execute(LOCK, {"id": user.id})
        time.sleep(1.5)  # the worker is "frozen": nothing sent on its connection
        other.execute(text("SET LOCAL lock_timeout = '3s'"))
        assert other.execute(LOCK, {"id": user.id}).scalar() == user.id  # not blocked
        other.rollback()
        with pytest.raises(OperationalError):
            frozen.execute(text("SELECT 1"))


def test_the_timeout_is_local_to_the_transaction(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        engine_repo.end_if_idle(session, 0.5)
        session.commit()
        session.execute(text("SELECT 1"))
        time.sleep(1.0)  # idle in a new transaction, without the timeout: still alive
        assert session.execute(text("SELECT 1")).scalar() == 1
