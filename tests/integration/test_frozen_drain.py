"""A drain whose worker freezes cannot hold its locks for longer than the idle timeout.

Found by the fault matrix (tests/e2e/test_faults.py, the SIGSTOP case): a worker
frozen inside a drain's transaction kept its account and transfer locks, and every
other drain of those accounts waited on them until the worker was thawed. Now every
worker connection asks PostgreSQL (once, when it connects) to end its session once it
sits idle inside a transaction for SETTLE_DRAIN_IDLE_TIMEOUT_SECONDS: the locks go, the
frozen worker's next statement fails (its batch rolled back, the task retries), and
the other drains go on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from domain.db import make_engine, make_session_factory
from tests.factories import make_user

LOCK = text("SELECT id FROM users WHERE id = :id FOR NO KEY UPDATE")


@pytest.fixture
def worker_sessions(services) -> Iterator[sessionmaker[Session]]:
    """Sessions configured as workers/resources.py configures the workers' (0.5 s)."""
    engine = make_engine(services.database_url, idle_in_transaction_timeout_seconds=0.5)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def test_an_idle_drain_transaction_is_ended_and_its_locks_released(
    session_factory: sessionmaker[Session], worker_sessions: sessionmaker[Session]
) -> None:
    user = make_user(session_factory)
    with worker_sessions() as frozen, session_factory() as other:
        frozen.execute(LOCK, {"id": user.id})
        time.sleep(1.5)  # the worker is "frozen": nothing sent on its connection
        other.execute(text("SET LOCAL lock_timeout = '3s'"))
        assert other.execute(LOCK, {"id": user.id}).scalar() == user.id  # not blocked
        other.rollback()
        with pytest.raises(OperationalError):
            frozen.execute(text("SELECT 1"))


def test_only_idleness_inside_a_transaction_ends_a_worker_session(
    worker_sessions: sessionmaker[Session],
) -> None:
    with worker_sessions() as session:
        session.execute(text("SELECT 1"))
        session.commit()
        time.sleep(1.0)  # idle between transactions (a pooled connection): still alive
        assert session.execute(text("SELECT 1")).scalar() == 1
        assert session.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "500ms"


def test_other_sessions_have_no_such_limit(session_factory: sessionmaker[Session]) -> None:
    """`settle verify` and the gateway: a long read-only transaction is not ended."""
    with session_factory() as session:
        assert session.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "0"
