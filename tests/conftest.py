"""Suite-wide wiring: the services plugin, and markers that follow the directory layout.

Servers are started by `tests/services.py` only when a test that needs them runs (see
the conftests of tests/integration, tests/e2e and tests/contract), so the unit tests
run with no PostgreSQL or Redis at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.services"]

TESTS = Path(__file__).parent
# Every test under these directories carries the marker, so `-m "not e2e"` or
# `-m contract` select by kind without each module having to remember a pytestmark.
DIRECTORY_MARKERS = {TESTS / "e2e": pytest.mark.e2e, TESTS / "contract": pytest.mark.contract}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Runs before pytest's own `-m` deselection (conftest hooks are called first).
    for item in items:
        for directory, marker in DIRECTORY_MARKERS.items():
            if item.path.is_relative_to(directory):
                item.add_marker(marker)
