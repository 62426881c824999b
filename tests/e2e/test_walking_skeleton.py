"""HTTP → PostgreSQL → Redis → Celery worker → ledger, with every part a real process."""

from __future__ import annotations

import pytest

from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
    wait_terminal,
)

pytestmark = pytest.mark.e2e


def test_register_login_deposit_transfer_poll(live_api, session_factory):
    api = live_api
    alice = register_and_login(api)
    bob = register_and_login(api)
    me = api.get("/v1/me", headers=alice).json()
    assert me["role"] == "customer"
    a = open_account(api, alice)
    b = open_account(api, bob)
    assert a["number"] != b["number"] and a["balance"] == 0

    operator = operator_headers(api, session_factory)
    deposit = post_deposit(api, operator, a["id"], 50_00)
    assert wait_terminal(api, operator, deposit["id"])["status"] == "succeeded"

    response = post_transfer(api, alice, a["id"], b["number"], 12_34)
    assert response.status_code == 202
    transfer = wait_terminal(api, alice, response.json()["id"])
    assert transfer["status"] == "succeeded", transfer
    assert transfer["failure_code"] is None

    assert api.get(f"/v1/accounts/{a['id']}", headers=alice).json()["balance"] == 50_00 - 12_34
    assert api.get(f"/v1/accounts/{b['id']}", headers=bob).json()["balance"] == 12_34
    [credit] = api.get(f"/v1/accounts/{b['id']}/entries", headers=bob).json()["data"]
    assert credit == {
        **credit,
        "transfer_id": transfer["id"],
        "amount": 12_34,
        "balance_before": 0,
        "balance_after": 12_34,
        "sequence": 1,
    }


def test_long_poll_returns_terminal_state(live_api, session_factory):
    alice = register_and_login(live_api)
    a = open_account(live_api, alice)
    operator = operator_headers(live_api, session_factory)
    deposit = post_deposit(live_api, operator, a["id"], 100)
    body = live_api.get(f"/v1/transfers/{deposit['id']}?wait=20", headers=operator).json()
    assert body["status"] == "succeeded"


def test_readiness_checks_database_and_broker(live_api, settings):
    response = live_api.get("/readyz")
    assert response.status_code == 200
    expected = {"database": "ok", "broker": "ok"}
    if settings.uses_rabbitmq:  # Redis then only holds rate limits and markers
        expected["redis"] = "ok"
    assert response.json()["checks"] == expected
