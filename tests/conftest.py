"""Suite-wide wiring: the services plugin.

Servers are started by `tests/services.py` only when a test that needs them runs (see
the conftests of tests/integration, tests/e2e and tests/contract), so the unit tests
run with no PostgreSQL or Redis at all.
"""

from __future__ import annotations

pytest_plugins = ["tests.services"]
