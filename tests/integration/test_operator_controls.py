"""Freeze/unfreeze, overdraft and daily limits: each changes execution and leaves an audit event."""

from __future__ import annotations

from tests.factories import (
    change_limits,
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
)


def _setup(client, session_factory, drain_pending, funds=10_000):
    operator = operator_headers(client, session_factory)
    alice, bob = register_and_login(client), register_and_login(client)
    a, b = open_account(client, alice), open_account(client, bob)
    if funds:
        post_deposit(client, operator, a["id"], funds)
        drain_pending()
    return operator, alice, bob, a, b


def _status(client, headers, transfer_id):
    return client.get(f"/v1/transfers/{transfer_id}", headers=headers).json()


def _audit(client, operator, event_type):
    response = client.get(
        "/v1/admin/audit-events", params={"event_type": event_type, "limit": 200}, headers=operator
    )
    assert response.status_code == 200
    return response.json()["data"]


def test_freeze_fails_pending_transfers_and_unfreeze_restores(
    client, session_factory, drain_pending
):
    operator, alice, bob, a, b = _setup(client, session_factory, drain_pending)
    pending = post_transfer(client, alice, a["id"], b["number"], 100).json()
    frozen = client.post(f"/v1/admin/accounts/{a['id']}/freeze", headers=operator)
    assert frozen.status_code == 200 and frozen.json()["status"] == "frozen"
    drain_pending()
    failed = _status(client, alice, pending["id"])
    assert failed["status"] == "failed" and failed["failure_code"] == "account_frozen"
    # Money *into* a frozen account fails too.
    inbound = post_transfer(client, bob, b["id"], a["number"], 1)
    drain_pending()
    assert _status(client, bob, inbound.json()["id"])["status"] == "failed"

    assert (
        client.post(f"/v1/admin/accounts/{a['id']}/unfreeze", headers=operator).json()["status"]
        == "active"
    )
    again = post_transfer(client, alice, a["id"], b["number"], 100).json()
    drain_pending()
    assert _status(client, alice, again["id"])["status"] == "succeeded"
    assert client.get(f"/v1/accounts/{a['id']}", headers=alice).json()["balance"] == 9_900

    subjects = {e["subject_id"] for e in _audit(client, operator, "account.frozen")}
    assert a["id"] in subjects
    failures = {
        e["subject_id"]: e["data"]["failure_code"]
        for e in _audit(client, operator, "transfer.failed")
    }
    assert failures[pending["id"]] == "account_frozen"


def test_overdraft_limit_lets_the_balance_go_negative_down_to_it(
    client, session_factory, drain_pending
):
    operator, alice, _, a, b = _setup(client, session_factory, drain_pending, funds=1_000)
    second = operator_headers(client, session_factory)
    response = change_limits(client, operator, second, a["id"], {"overdraft_limit": 500})
    assert response.status_code == 200 and response.json()["status"] == "approved"
    ok = post_transfer(client, alice, a["id"], b["number"], 1_500).json()
    too_far = post_transfer(client, alice, a["id"], b["number"], 1).json()
    drain_pending()
    assert _status(client, alice, ok["id"])["status"] == "succeeded"
    refused = _status(client, alice, too_far["id"])
    assert refused["failure_code"] == "insufficient_funds"
    assert client.get(f"/v1/accounts/{a['id']}", headers=alice).json()["balance"] == -500
    # The limit cannot be lowered below what the account already owes.
    lowered = change_limits(client, operator, second, a["id"], {"overdraft_limit": 100})
    assert lowered.status_code == 409 and lowered.json()["code"] == "limit_below_balance"


def test_daily_outgoing_limit(client, session_factory, drain_pending):
    operator, alice, _, a, b = _setup(client, session_factory, drain_pending)
    second = operator_headers(client, session_factory)
    applied = change_limits(client, operator, second, a["id"], {"daily_outgoing_limit": 1_000})
    assert applied.status_code == 200, applied.text
    first = post_transfer(client, alice, a["id"], b["number"], 600).json()
    second = post_transfer(client, alice, a["id"], b["number"], 600).json()
    third = post_transfer(client, alice, a["id"], b["number"], 400).json()
    drain_pending()
    assert _status(client, alice, first["id"])["status"] == "succeeded"
    assert _status(client, alice, second["id"])["failure_code"] == "daily_limit_exceeded"
    assert _status(client, alice, third["id"])["status"] == "succeeded"  # exactly at the limit


def test_customers_cannot_use_operator_endpoints(client, session_factory, drain_pending):
    _, alice, _, a, _ = _setup(client, session_factory, drain_pending, funds=0)
    for method, path in [
        ("post", f"/v1/admin/accounts/{a['id']}/freeze"),
        ("post", f"/v1/admin/accounts/{a['id']}/unfreeze"),
        ("patch", f"/v1/admin/accounts/{a['id']}/limits"),
        ("get", "/v1/admin/audit-events"),
    ]:
        kwargs = {"json": {"overdraft_limit": 10}} if method == "patch" else {}
        response = getattr(client, method)(path, headers=alice, **kwargs)
        assert response.status_code == 403, path
        assert response.json()["code"] == "forbidden"
    assert client.get(f"/v1/accounts/{a['id']}", headers=alice).json()["status"] == "active"


def test_limits_reject_negative_and_unknown_fields(client, session_factory, drain_pending):
    operator, _, _, a, _ = _setup(client, session_factory, drain_pending, funds=0)
    for body in ({"overdraft_limit": -1}, {"overdraft_limit": 1.5}, {"balance": 5}):
        response = client.patch(f"/v1/admin/accounts/{a['id']}/limits", json=body, headers=operator)
        assert response.status_code == 422, body
