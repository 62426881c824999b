"""Holds, captures, reversals, cancel and schedules through the real worker and beat.

The gateway publishes wake-ups to a key prefix of this test's own; a real Celery
worker with an embedded beat drains them, expires holds and wakes lanes whose
scheduled transfers fall due (nothing here calls the engine or the sweeper itself).
"""

from __future__ import annotations

import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import (
    idem,
    open_account,
    operator_headers,
    post_deposit,
    register_and_login,
    wait_terminal,
)
from tests.processes import running_worker

pytestmark = pytest.mark.e2e


def _wait_status(client, headers, transfer_id, status, timeout=30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/v1/transfers/{transfer_id}", headers=headers).json()
        if body["status"] == status:
            return body
        assert time.monotonic() < deadline, f"{transfer_id} is {body['status']}, not {status}"
        time.sleep(0.1)


def test_money_movement_with_the_real_worker_and_beat(settings, session_factory, redis_client):
    from gateway.app import create_app

    prefix = f"settle-mm-{secrets.token_hex(4)}:"
    isolated = settings.model_copy(update={"redis_prefix": prefix})
    env = {**os.environ, "SETTLE_REDIS_PREFIX": prefix}
    try:
        with (
            TestClient(create_app(isolated)) as client,
            running_worker(env, concurrency=1, beat=True),
        ):
            operator = operator_headers(client, session_factory)
            alice, bob = register_and_login(client), register_and_login(client)
            a, b = open_account(client, alice), open_account(client, bob)
            deposit = post_deposit(client, operator, a["id"], 10_000)
            assert wait_terminal(client, operator, deposit["id"])["status"] == "succeeded"

            def post(path: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
                response = client.post(path, json=body, headers={**headers, **idem()})
                assert response.status_code == 202, response.text
                created: dict[str, Any] = response.json()
                return created

            pay = {
                "source_account_id": a["id"],
                "destination_account_number": b["number"],
                "currency": "USD",
            }
            # A hold that expires by the beat, and one that is captured in part.
            expiring = post("/v1/holds", {**pay, "amount": 700, "expires_in_seconds": 2}, alice)
            kept = post("/v1/holds", {**pay, "amount": 2_000, "expires_in_seconds": 600}, alice)
            _wait_status(client, alice, kept["id"], "held")
            capture = post(f"/v1/holds/{kept['id']}/capture", {"amount": 1_500}, alice)
            assert wait_terminal(client, alice, capture["id"])["status"] == "succeeded"
            assert _wait_status(client, alice, kept["id"], "captured")["captured_amount"] == 1_500
            assert _wait_status(client, alice, expiring["id"], "expired", timeout=20)

            # A refund of part of a payment.
            paid = post("/v1/transfers", {**pay, "amount": 1_000}, alice)
            assert wait_terminal(client, alice, paid["id"])["status"] == "succeeded"
            refund = post(f"/v1/transfers/{paid['id']}/reversals", {"amount": 400}, bob)
            assert wait_terminal(client, bob, refund["id"])["status"] == "succeeded"

            # A scheduled transfer, applied by the sweeper once due; another canceled.
            at = datetime.now(UTC) + timedelta(seconds=2)
            scheduled = post(
                "/v1/transfers", {**pay, "amount": 100, "execute_at": at.isoformat()}, alice
            )
            later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            canceled = post("/v1/transfers", {**pay, "amount": 100, "execute_at": later}, alice)
            answer = client.post(f"/v1/transfers/{canceled['id']}/cancel", headers=alice)
            assert answer.status_code == 200 and answer.json()["status"] == "canceled"
            done = wait_terminal(client, alice, scheduled["id"], timeout=20)
            assert done["status"] == "succeeded"
            assert datetime.fromisoformat(done["completed_at"]) >= at

            account = client.get(f"/v1/accounts/{a['id']}", headers=alice).json()
            # 10,000 - 1,500 captured - 1,000 paid + 400 refunded - 100 scheduled
            assert (account["balance"], account["available_balance"]) == (7_800, 7_800)
    finally:
        for key in redis_client.scan_iter(match=f"{prefix}*"):
            redis_client.delete(key)
