"""Contract tests run the in-process gateway on the real PostgreSQL and Redis of the run."""

from __future__ import annotations

import pytest

from tests.services import Services


@pytest.fixture(scope="session", autouse=True)
def _services(services: Services) -> Services:
    """Every test here needs the servers (the schema itself is read without them)."""
    return services
