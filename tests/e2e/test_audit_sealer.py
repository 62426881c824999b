"""Beat's process seals the audit chain (workers/audit_sealer.py), within a second or so.

A database of its own, a beat and nothing else: no worker runs, and the periodic
sweep (which seals too) is an hour away, so only beat's sealer thread can seal the
rows written here.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from settle import processes
from settle.harness import migrated_database
from tests.processes import Process, settings_env

pytestmark = pytest.mark.e2e


def test_beat_seals_new_audit_rows_within_seconds(isolated, services, tmp_path):
    with migrated_database(services.server_url, "settle_test_sealer") as (_, roles):
        env = settings_env(
            isolated, DATABASE_URL=roles.app_url, SETTLE_SWEEP_INTERVAL_SECONDS="3600"
        )
        beat = Process("beat", processes.beat_argv(schedule=str(tmp_path / "schedule")), env)
        app = create_engine(roles.app_url)
        try:
            with app.begin() as connection:
                ids = (
                    connection.execute(
                        text(
                            "INSERT INTO audit_events (occurred_at, event_type, data)"
                            " SELECT now(), 'test.sealer', jsonb_build_object('n', n)"
                            " FROM generate_series(1, 25) AS n RETURNING id"
                        )
                    )
                    .scalars()
                    .all()
                )
            deadline = time.monotonic() + 20
            sealed = 0
            while time.monotonic() < deadline:
                with app.connect() as connection:
                    sealed = connection.execute(
                        text("SELECT count(*) FROM audit_seals WHERE audit_id = ANY(:ids)"),
                        {"ids": ids},
                    ).scalar_one()
                if sealed == len(ids):
                    break
                time.sleep(0.2)
            assert sealed == len(ids), beat.log()[-3000:]
        finally:
            beat.stop()
            app.dispose()
