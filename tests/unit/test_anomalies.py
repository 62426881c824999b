"""The anomaly rules: pure functions of facts the callers supply."""

from __future__ import annotations

import uuid

from domain import anomalies


def test_large_transfers_are_flagged_from_the_threshold_on_and_never_without_one():
    assert [anomalies.is_large_transfer(a, 5_000) for a in (4_999, 5_000)] == [False, True]
    assert not anomalies.is_large_transfer(10**12, None)


def test_daily_velocity_flags_once_for_the_first_request_past_the_threshold():
    user = uuid.uuid4()
    flags = [
        anomalies.daily_velocity(user_id=user, requests_today=n, threshold=2) for n in (1, 2, 3, 4)
    ]
    assert flags[:2] == [None, None] and flags[3] is None
    assert flags[2] == anomalies.Anomaly(
        kind="daily_velocity", actor_id=user, data={"threshold": 2}
    )
    assert flags[2].event_type == "anomaly.daily_velocity"
