"""A balance alert, end to end: Celery workers apply the transfers and send the webhooks."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from domain.webhook_signing import verify
from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
    wait_terminal,
)
from tests.processes import running_worker, settings_env
from tests.receiver import running_receiver

pytestmark = pytest.mark.e2e


def test_a_balance_pushed_back_and_forth_fires_one_webhook_per_real_crossing(
    isolated, session_factory
):
    from gateway.app import create_app

    # Queues of its own (key prefix; a vhost on RabbitMQ): the package's live worker
    # must not take these webhooks.
    app_settings = isolated.model_copy(update={"webhook_allow_private": True})
    env = settings_env(isolated, SETTLE_WEBHOOK_ALLOW_PRIVATE="true")
    with (
        running_receiver() as receiver,
        TestClient(create_app(app_settings)) as client,
        running_worker(env, concurrency=2),
    ):
        operator = operator_headers(client, session_factory)
        alice = register_and_login(client)
        account = open_account(client, alice)
        sink = open_account(client, register_and_login(client))
        funded = post_deposit(client, operator, account["id"], 10_000)
        assert wait_terminal(client, alice, funded["id"])["status"] == "succeeded"
        alert = client.post(
            f"/v1/accounts/{account['id']}/balance-alerts",
            json={"below": 5_000, "rearm_margin": 1_000},
            headers=alice,
        )
        assert alert.status_code == 201, alert.text
        hook = client.post(
            "/v1/webhook-endpoints",
            json={"url": receiver.url, "events": ["balance.below", "balance.above"]},
            headers=alice,
        )
        assert hook.status_code == 201, hook.text
        secret = hook.json()["secret"]

        # (amount out of the account; negative: a deposit into it) → balance after
        moves = [
            (4_000, 6_000),
            (2_000, 4_000),  # crosses under 5_000: event 1
            (500, 3_500),  # stays under: nothing
            (-2_000, 5_500),  # back over, but not by the 1_000 margin: not re-armed
            (1_000, 4_500),  # under again, not re-armed: nothing
            (-3_000, 7_500),  # 6_000 or more: re-armed
            (3_000, 4_500),  # crosses: event 2
            (-10_000, 14_500),
            (10_000, 4_500),  # crosses: event 3
        ]
        for amount, balance in moves:
            if amount > 0:
                moved = post_transfer(client, alice, account["id"], sink["number"], amount)
                assert moved.status_code == 202, moved.text
                moved_id = moved.json()["id"]
            else:
                moved_id = post_deposit(client, operator, account["id"], -amount)["id"]
            assert wait_terminal(client, alice, moved_id)["status"] == "succeeded"
            shown = client.get(f"/v1/accounts/{account['id']}", headers=alice).json()
            assert shown["balance"] == balance

        requests = receiver.wait_for(3)
        time.sleep(2)  # anything more would have arrived by now
        assert len(receiver.requests) == 3

    payloads = [json.loads(r.body) for r in requests]
    assert {p["type"] for p in payloads} == {"balance.below"}
    assert sorted(p["data"]["balance_before"] for p in payloads) == [6_000, 7_500, 14_500]
    assert {p["data"]["balance"] for p in payloads} == {4_000, 4_500}
    assert {p["data"]["alert_id"] for p in payloads} == {alert.json()["id"]}
    for request in requests:
        assert verify(
            secret,
            msg_id=request.headers["webhook-id"],
            timestamp=int(request.headers["webhook-timestamp"]),
            body=request.body,
            header=request.headers["webhook-signature"],
        )
