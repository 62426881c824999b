"""Accept → drain → ledger, in-process, on real PostgreSQL and Redis."""

from __future__ import annotations

from tests.factories import (
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
)


def test_deposit_transfer_withdrawal_balance_and_entries(client, session_factory, drain_pending):
    operator = operator_headers(client, session_factory)
    alice = register_and_login(client)
    bob = register_and_login(client)
    a = open_account(client, alice)
    b = open_account(client, bob)

    deposit = post_deposit(client, operator, a["id"], 10_000)
    assert deposit["status"] == "pending" and deposit["kind"] == "deposit"
    drain_pending()  # the deposit must land before money can leave the account
    response = post_transfer(client, alice, a["id"], b["number"], 2_500)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/transfers/{response.json()['id']}"
    drain_pending()
    withdrawal = client.post(
        "/v1/withdrawals",
        json={"account_id": b["id"], "amount": 500, "currency": "USD"},
        headers={**bob, "Idempotency-Key": "w-1"},
    )
    assert withdrawal.status_code == 202, withdrawal.text

    drain_pending()

    transfer = client.get(f"/v1/transfers/{response.json()['id']}", headers=alice).json()
    assert transfer["status"] == "succeeded" and transfer["completed_at"]
    assert client.get(f"/v1/accounts/{a['id']}", headers=alice).json()["balance"] == 7_500
    assert client.get(f"/v1/accounts/{b['id']}", headers=bob).json()["balance"] == 2_000

    entries = client.get(f"/v1/accounts/{a['id']}/entries", headers=alice).json()["data"]
    assert [e["amount"] for e in entries] == [-2_500, 10_000]  # newest first
    assert [e["sequence"] for e in entries] == [2, 1]
    assert entries[0]["balance_before"] == 10_000 and entries[0]["balance_after"] == 7_500
    assert entries[1]["balance_before"] == 0 and entries[1]["balance_after"] == 10_000

    # The recipient sees the transfer too (it touches their account).
    assert client.get(f"/v1/transfers/{transfer['id']}", headers=bob).status_code == 200


def test_insufficient_funds_fails_with_code_and_moves_nothing(
    client, session_factory, drain_pending
):
    alice = register_and_login(client)
    bob = register_and_login(client)
    a = open_account(client, alice)
    b = open_account(client, bob)
    response = post_transfer(client, alice, a["id"], b["number"], 1)
    assert response.status_code == 202
    drain_pending()
    transfer = client.get(f"/v1/transfers/{response.json()['id']}", headers=alice).json()
    assert transfer["status"] == "failed"
    assert transfer["failure_code"] == "insufficient_funds"
    assert client.get(f"/v1/accounts/{a['id']}/entries", headers=alice).json()["data"] == []
