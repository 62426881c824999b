"""What a payer learns about someone else's account: that it cannot receive, never why.

Issue 10, finding 11: a transfer to another customer's account in another currency
answered "account <number> holds EUR, not USD", and a transfer to a frozen payee failed
with `account_frozen`, visible to the payer on GET /v1/transfers/{id} and in events.
About the caller's own accounts, messages stay precise.
"""

from __future__ import annotations

import json

from tests.factories import (
    idem,
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
    wait_for_events,
)

GENERIC = (
    "the destination account cannot receive this transfer; check the account number with its holder"
)


def test_another_customers_currency_is_not_revealed(client, session_factory, drain_pending):
    alice, bob = register_and_login(client), register_and_login(client)
    a = open_account(client, alice)
    bobs_eur = open_account(client, bob, currency="EUR")
    response = post_transfer(client, alice, a["id"], bobs_eur["number"], 100)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "destination_unavailable"
    assert body["detail"] == GENERIC
    assert "EUR" not in response.text and bobs_eur["number"] not in response.text

    batch = client.post(
        "/v1/transfer-batches",
        json={
            "transfers": [
                {
                    "source_account_id": a["id"],
                    "destination_account_number": bobs_eur["number"],
                    "amount": 1,
                    "currency": "USD",
                }
            ]
        },
        headers={**alice, **idem()},
    )
    assert batch.status_code == 422
    assert batch.json()["errors"] == [
        {"index": 0, "code": "destination_unavailable", "detail": GENERIC}
    ]
    assert "EUR" not in batch.text


def test_the_callers_own_accounts_get_precise_messages(client):
    alice = register_and_login(client)
    a, alices_eur = open_account(client, alice), open_account(client, alice, currency="EUR")
    to_own = post_transfer(client, alice, a["id"], alices_eur["number"], 100)
    assert to_own.status_code == 422
    assert to_own.json()["code"] == "currency_mismatch"
    assert to_own.json()["detail"] == f"account {alices_eur['number']} holds EUR, not USD"
    from_own = post_transfer(client, alice, a["id"], alices_eur["number"], 100, currency="EUR")
    assert from_own.json()["code"] == "currency_mismatch"
    assert from_own.json()["detail"] == f"account {a['number']} holds USD, not EUR"


def test_a_frozen_payee_is_not_revealed_to_the_payer(client, session_factory, drain_pending):
    operator = operator_headers(client, session_factory)
    alice, bob = register_and_login(client), register_and_login(client)
    a, b = open_account(client, alice), open_account(client, bob)
    post_deposit(client, operator, b["id"], 1_000)
    drain_pending()
    assert client.post(f"/v1/admin/accounts/{a['id']}/freeze", headers=operator).status_code == 200

    sent = post_transfer(client, bob, b["id"], a["number"], 100)
    assert sent.status_code == 202
    drain_pending()
    seen = client.get(f"/v1/transfers/{sent.json()['id']}", headers=bob)
    assert seen.json()["status"] == "failed"
    assert seen.json()["failure_code"] == "destination_unavailable"
    assert "frozen" not in seen.text

    events = wait_for_events(client, bob, 2)  # the deposit's success, then this failure
    failed = [e for e in events if e["type"] == "transfer.failed"]
    assert failed and "frozen" not in json.dumps(failed)
    assert failed[0]["data"]["transfer"]["failure_code"] == "destination_unavailable"

    # The payer's own frozen account is still named precisely.
    assert client.post(f"/v1/admin/accounts/{b['id']}/freeze", headers=operator).status_code == 200
    own = post_transfer(client, bob, b["id"], a["number"], 100)
    drain_pending()
    mine = client.get(f"/v1/transfers/{own.json()['id']}", headers=bob).json()
    assert mine["failure_code"] == "account_frozen"
