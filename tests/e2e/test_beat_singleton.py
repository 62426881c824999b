"""Beat is a singleton by construction: two beats, one PostgreSQL advisory lock, one sender.

Two beats start on the same deployment (database, key prefix, broker) with a 1 s
sweep. No worker runs, so every sweep either sent stays in the queue: the queue
holds exactly what the leader logged as sent, and the standby sent nothing. When the
leader is SIGKILLed, PostgreSQL ends its session and with it the lock, and the
standby takes over within seconds.
"""

from __future__ import annotations

import signal
import time

import pytest

from settle import processes
from tests.processes import Process, queue_depth, settings_env

pytestmark = pytest.mark.e2e

SWEEP_SENT = "Sending due task sweep-pending-transfers"


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _sent_once(settings, beats: list[Process], before: int = 0) -> None:
    """The queue holds each logged sweep once: between what was logged before and after
    the count (one may be between its log line and the broker while we look)."""
    logged_before = sum(beat.log().count(SWEEP_SENT) for beat in beats)
    depth = queue_depth(settings) - before
    logged_after = sum(beat.log().count(SWEEP_SENT) for beat in beats)
    assert logged_before - 1 <= depth <= logged_after, (logged_before, depth, logged_after)


def test_two_beats_send_each_sweep_once_and_the_standby_takes_over(isolated, tmp_path):
    env = settings_env(isolated, SETTLE_SWEEP_INTERVAL_SECONDS="1")
    beats = [
        Process("beat", processes.beat_argv(schedule=str(tmp_path / f"schedule-{i}")), env)
        for i in range(2)
    ]
    try:
        _wait(
            lambda: any(SWEEP_SENT in beat.log() for beat in beats),
            timeout=60,
            what="no beat sent a sweep",
        )
        time.sleep(6)  # six sweep intervals with both beats running
        sent = [beat.log().count(SWEEP_SENT) for beat in beats]
        leader, standby = (beats[0], beats[1]) if sent[0] else (beats[1], beats[0])
        assert sorted(sent)[0] == 0, f"both beats sent sweeps: {sent}"
        assert sorted(sent)[1] >= 5, f"the leader missed sweeps: {sent}"
        assert "beat stands by" in standby.log() and "beat leads" not in standby.log()
        _sent_once(isolated, beats)

        leader.stop(signal.SIGKILL)
        before = queue_depth(isolated)
        _wait(
            lambda: SWEEP_SENT in standby.log(),
            timeout=15,
            what=f"the standby never took over:\n{standby.log()[-3000:]}",
        )
        time.sleep(3)
        assert "beat leads" in standby.log()
        _sent_once(isolated, [standby], before=before)
    finally:
        for beat in beats:
            beat.stop()
