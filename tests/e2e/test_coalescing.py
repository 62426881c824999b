"""Coalesced wake-ups: one message per idle lane, and nothing stranded when a marker lies."""

from __future__ import annotations

import time
import uuid

import pytest
from fastapi.testclient import TestClient

from settle.broker import DRAIN_LANE_TASK
from tests.factories import (
    lane_of,
    open_account,
    operator_headers,
    post_deposit,
    register_and_login,
    wait_terminal,
)
from tests.processes import purge_queue, queue_depth, running_worker, settings_env

pytestmark = pytest.mark.e2e


def test_wakeups_coalesce_per_lane_and_a_stale_marker_strands_nothing(
    isolated, session_factory, redis_client
):
    from gateway.app import create_app

    with TestClient(create_app(isolated)) as client:
        operator = operator_headers(client, session_factory)
        owner = register_and_login(client)
        account = open_account(client, owner)
        first = post_deposit(client, operator, account["id"], 100)
        lane = lane_of(
            uuid.UUID(first["source_account_id"])
        )  # deposits leave the settlement account
        marker = f"{isolated.redis_prefix}lane:{isolated.lanes}:{lane}"
        assert queue_depth(isolated) == 1 and redis_client.exists(marker)

        deposits = [first] + [post_deposit(client, operator, account["id"], 100) for _ in range(4)]
        assert queue_depth(isolated) == 1, "a lane with a drain queued gets no new message"

        redis_client.delete(marker)  # lost (e.g. Redis restarted without persistence)
        deposits.append(post_deposit(client, operator, account["id"], 100))
        assert queue_depth(isolated) == 2, "no marker: the next accept publishes again"

        # Worst case: the marker says "a drain is coming" but every message is gone
        # (the drain died before it could take them). Accepts publish nothing...
        purge_queue(isolated)
        redis_client.set(marker, 1, ex=600)
        deposits.append(post_deposit(client, operator, account["id"], 100))
        assert queue_depth(isolated) == 0
        time.sleep(1.5)  # older than SETTLE_SWEEP_STALE_AFTER_SECONDS

        # ...and the beat sweeper wakes the lane whatever the marker says.
        with running_worker(settings_env(isolated), concurrency=1, beat=True) as worker:
            for deposit in deposits:
                assert wait_terminal(client, operator, deposit["id"])["status"] == "succeeded"
            assert "sweeper woke 1 lane" in worker.log()
            deadline = time.monotonic() + 10
            while redis_client.exists(marker):  # the drain let go of the lane when done
                assert time.monotonic() < deadline, "the marker outlived the drain"
                time.sleep(0.1)
        balance = client.get(f"/v1/accounts/{account['id']}", headers=owner).json()["balance"]
        assert balance == 100 * len(deposits)


def test_a_lingering_drain_takes_later_transfers_without_new_messages(
    isolated, session_factory, redis_client
):
    """Each deposit is accepted after the previous one settled, while the drain waits
    for its lane's bell: the real worker applies all of them from the first message."""
    from gateway.app import create_app

    env = settings_env(isolated, SETTLE_DRAIN_LINGER_SECONDS="1.0")
    with (
        TestClient(create_app(isolated)) as client,
        running_worker(env, concurrency=1) as worker,
    ):
        operator = operator_headers(client, session_factory)
        account = open_account(client, register_and_login(client))
        for _ in range(6):
            deposit = post_deposit(client, operator, account["id"], 100)
            assert wait_terminal(client, operator, deposit["id"])["status"] == "succeeded"
        lane = lane_of(uuid.UUID(deposit["source_account_id"]))
        marker = f"{isolated.redis_prefix}lane:{isolated.lanes}:{lane}"
        deadline = time.monotonic() + 10
        while redis_client.exists(marker):  # let go a second after the last deposit
            assert time.monotonic() < deadline, "the drain never let go of its lane"
            time.sleep(0.1)
        while "transfer(s) settled" not in (log := worker.log()):  # the task's last line
            assert time.monotonic() < deadline, log[-3000:]
            time.sleep(0.1)
        received = [line for line in log.splitlines() if f"Task {DRAIN_LANE_TASK}[" in line]
        received = [line for line in received if line.endswith("] received")]
        assert len(received) == 1, log[-3000:]
        assert "6 transfer(s) settled" in log
        assert queue_depth(isolated) == 0
