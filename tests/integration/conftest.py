"""In-process gateway (TestClient) on the real test database and Redis; no worker runs.

Tests that need transfers applied call `drain_pending`, which runs the same
function the Celery task runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from domain.models import Transfer
from tests.services import Services


@pytest.fixture(scope="session", autouse=True)
def _services(services: Services) -> Services:
    """Every test here runs on the real PostgreSQL and Redis of the run."""
    return services


@pytest.fixture(scope="session")
def client(settings: Any) -> Iterator[TestClient]:
    from gateway.app import create_app

    # Wake-ups go to a key prefix no worker listens on: these tests decide when
    # transfers are applied. (The run's cleanup removes these keys too.)
    quiet = settings.model_copy(update={"redis_prefix": f"{settings.redis_prefix}inproc:"})
    with TestClient(create_app(quiet), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def drain_pending(session_factory: sessionmaker[Session], settings: Any) -> Any:
    """Apply every due pending transfer, lane by lane, as the worker would (transfers
    scheduled for later, `execute_at`, are left pending)."""
    from domain.lanes import Lanes
    from workers.tasks import drain

    def run() -> int:
        total = 0
        while True:
            with session_factory() as session:
                slots = set(
                    session.scalars(
                        select(Transfer.lane).where(
                            Transfer.status == "pending",
                            or_(Transfer.execute_at.is_(None), Transfer.execute_at <= func.now()),
                        )
                    )
                )
            if not slots:
                return total
            for lane in sorted({Lanes(settings.lanes).of_slot(slot) for slot in slots}):
                total += drain(lane)

    return run
