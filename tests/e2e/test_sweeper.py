"""A transfer whose wake-up message vanished from the broker is still completed by the sweeper."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    register_and_login,
    wait_terminal,
)
from tests.processes import purge_queue, queue_depth, running_worker, settings_env

pytestmark = pytest.mark.e2e


def test_deleted_wakeup_message_is_recovered_by_the_sweeper(isolated, session_factory):
    from gateway.app import create_app

    # Queues of its own: no other worker of this run can see them.
    with TestClient(create_app(isolated)) as client:
        alice = register_and_login(client)
        account = open_account(client, alice)
        operator = operator_headers(client, session_factory)
        deposit = post_deposit(client, operator, account["id"], 4_200)

        assert queue_depth(isolated) == 1, "the gateway published one wake-up"
        purge_queue(isolated)  # the message is lost
        time.sleep(1.5)  # older than SETTLE_SWEEP_STALE_AFTER_SECONDS
        assert (
            client.get(f"/v1/transfers/{deposit['id']}", headers=operator).json()["status"]
            == "pending"
        )

        with running_worker(settings_env(isolated), concurrency=1, beat=True) as worker:
            done = wait_terminal(client, operator, deposit["id"], timeout=30)
            assert done["status"] == "succeeded"
            assert "sweeper woke 1 lane" in worker.log()
    assert client.get(f"/v1/accounts/{account['id']}", headers=alice).json()["balance"] == 4_200
