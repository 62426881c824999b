"""A slow webhook receiver must not delay transfer execution (separate queue and workers)."""

from __future__ import annotations

import time
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from domain.models import Transfer
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


def test_200_events_to_a_slow_receiver_do_not_delay_transfers(isolated, session_factory):
    from gateway.app import create_app

    app_settings = isolated.model_copy(update={"webhook_allow_private": True})
    env = settings_env(isolated, SETTLE_WEBHOOK_ALLOW_PRIVATE="true")
    with (
        running_receiver() as receiver,
        TestClient(create_app(app_settings)) as client,
        running_worker(env, queues="transfers", concurrency=2),
        running_worker(env, queues="webhooks", concurrency=2),
    ):
        receiver.delay_seconds = 0.5  # 200 events need ≥ 50 s at this pace
        operator = operator_headers(client, session_factory)
        alice = register_and_login(client)
        a, b = open_account(client, alice), open_account(client, register_and_login(client))
        deposit = post_deposit(client, operator, a["id"], 100_000)
        assert wait_terminal(client, operator, deposit["id"])["status"] == "succeeded"
        hook = client.post(
            "/v1/webhook-endpoints",
            headers=alice,
            json={"url": receiver.url, "events": ["transfer.succeeded"]},
        )
        assert hook.status_code == 201

        started = time.monotonic()
        ids = [
            post_transfer(client, alice, a["id"], b["number"], 1).json()["id"] for _ in range(200)
        ]
        deadline = started + 60
        while True:
            with session_factory() as session:
                pending = session.scalar(
                    select(func.count())
                    .select_from(Transfer)
                    .where(
                        Transfer.id.in_([uuid.UUID(i) for i in ids]),
                        Transfer.status == "pending",
                    )
                )
            if not pending:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        settled_after = time.monotonic() - started
        delivered_by_then = len(receiver.requests)
        receiver.wait_for(3)  # deliveries are flowing, just slowly
    print(
        f"200 transfers settled in {settled_after:.1f}s; "
        f"{delivered_by_then} webhooks delivered by then"
    )
    assert delivered_by_then < 150, "transfers waited for the slow receiver"
