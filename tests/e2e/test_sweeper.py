"""A transfer whose wake-up message vanished from the broker is still completed by the sweeper."""

from __future__ import annotations

import os
import secrets
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
from tests.processes import running_worker

pytestmark = pytest.mark.e2e


def test_deleted_wakeup_message_is_recovered_by_the_sweeper(
    settings, session_factory, redis_client
):
    from gateway.app import create_app

    # A key prefix of its own: no other worker of this run can see these queues.
    prefix = f"settle-sweeper-{secrets.token_hex(4)}:"
    isolated = settings.model_copy(update={"redis_prefix": prefix})
    with TestClient(create_app(isolated)) as client:
        alice = register_and_login(client)
        account = open_account(client, alice)
        operator = operator_headers(client, session_factory)
        deposit = post_deposit(client, operator, account["id"], 4_200)

        queue = f"{prefix}transfers"
        assert redis_client.llen(queue) == 1, "the gateway published one wake-up"
        redis_client.delete(queue)  # the message is lost
        time.sleep(1.5)  # older than SETTLE_SWEEP_STALE_AFTER_SECONDS
        assert (
            client.get(f"/v1/transfers/{deposit['id']}", headers=operator).json()["status"]
            == "pending"
        )

        env = {**os.environ, "SETTLE_REDIS_PREFIX": prefix}
        try:
            with running_worker(env, concurrency=1, beat=True) as worker:
                done = wait_terminal(client, operator, deposit["id"], timeout=30)
                assert done["status"] == "succeeded"
                assert "sweeper woke 1 lane" in worker.log()
        finally:
            for key in redis_client.scan_iter(match=f"{prefix}*"):
                redis_client.delete(key)
    assert client.get(f"/v1/accounts/{account['id']}", headers=alice).json()["balance"] == 4_200
