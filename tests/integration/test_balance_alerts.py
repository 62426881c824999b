"""Balance alerts: the routes (who may do what, bad input) and edge-triggered firing in
the engine's transaction (the engine runs in-process here; tests/e2e runs it in a worker)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from domain.models import Account, BalanceAlert, Event
from domain.services.alerts import MAX_ALERTS_PER_ACCOUNT, AlertState, evaluate
from tests.factories import (
    idem,
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
    wait_for_events,
)


def _alerts_url(account: dict[str, Any]) -> str:
    return f"/v1/accounts/{account['id']}/balance-alerts"


def _create(client, headers, account, **body) -> Any:
    return client.post(_alerts_url(account), json=body, headers=headers)


def _balance_events(client, headers) -> list[dict[str, Any]]:
    page = client.get(
        "/v1/events", params={"types": "balance.below,balance.above", "limit": 500}, headers=headers
    )
    assert page.status_code == 200, page.text
    return page.json()["data"]


@pytest.fixture
def funded(client, session_factory, drain_pending):
    """Alice's account with 10_000, a sink of Bob's, and an operator."""
    operator = operator_headers(client, session_factory)
    alice, bob = register_and_login(client), register_and_login(client)
    account, sink = open_account(client, alice), open_account(client, bob)
    post_deposit(client, operator, account["id"], 10_000)
    drain_pending()
    return {"operator": operator, "alice": alice, "bob": bob, "account": account, "sink": sink}


# --- routes ------------------------------------------------------------------------


def test_the_owner_sets_lists_reads_and_deletes_an_alert(client, funded, session_factory):
    alice, account = funded["alice"], funded["account"]
    created = _create(client, alice, account, below=5_000, rearm_margin=500)
    assert created.status_code == 201, created.text
    alert = created.json()
    assert created.headers["Location"] == f"{_alerts_url(account)}/{alert['id']}"
    assert alert["account_id"] == account["id"]
    assert (alert["below"], alert["above"], alert["rearm_margin"]) == (5_000, None, 500)
    assert (alert["below_armed"], alert["above_armed"]) == (True, None)  # 10_000 is above
    assert client.get(_alerts_url(account), headers=alice).json() == {
        "data": [alert],
        "next_cursor": None,
    }
    assert client.get(f"{_alerts_url(account)}/{alert['id']}", headers=alice).json() == alert
    with session_factory() as session:
        assert session.get(Account, uuid.UUID(account["id"])).balance_alert_count == 1
    deleted = client.delete(f"{_alerts_url(account)}/{alert['id']}", headers=alice)
    assert deleted.status_code == 204
    assert client.get(_alerts_url(account), headers=alice).json()["data"] == []
    assert client.get(f"{_alerts_url(account)}/{alert['id']}", headers=alice).status_code == 404
    with session_factory() as session:
        assert session.get(Account, uuid.UUID(account["id"])).balance_alert_count == 0


def test_another_customer_gets_404_for_every_alert_route(client, funded):
    alice, bob, account = funded["alice"], funded["bob"], funded["account"]
    alert = _create(client, alice, account, below=1).json()
    one = f"{_alerts_url(account)}/{alert['id']}"
    for response in (
        _create(client, bob, account, below=1),
        client.get(_alerts_url(account), headers=bob),
        client.get(one, headers=bob),
        client.delete(one, headers=bob),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"
    # An alert id under another account (Bob's own) is not found either.
    sink = funded["sink"]
    assert client.get(f"{_alerts_url(sink)}/{alert['id']}", headers=bob).status_code == 404
    assert client.delete(f"{_alerts_url(sink)}/{alert['id']}", headers=bob).status_code == 404
    assert client.get(one, headers=alice).status_code == 200  # still there


def test_operators_manage_alerts_on_any_account_and_customers_see_only_their_own(client, funded):
    alice, operator, account = funded["alice"], funded["operator"], funded["account"]
    mine = _create(client, alice, account, above=20_000).json()
    theirs = _create(client, operator, account, below=100)
    assert theirs.status_code == 201, theirs.text
    theirs = theirs.json()
    listed = client.get(_alerts_url(account), headers=operator).json()["data"]
    assert [a["id"] for a in listed] == [mine["id"], theirs["id"]]
    # The back office's alert is not the customer's: hidden from them, and not theirs to delete.
    assert [a["id"] for a in client.get(_alerts_url(account), headers=alice).json()["data"]] == [
        mine["id"]
    ]
    assert client.delete(f"{_alerts_url(account)}/{theirs['id']}", headers=alice).status_code == 404
    assert client.get(f"{_alerts_url(account)}/{mine['id']}", headers=operator).status_code == 200
    assert (
        client.delete(f"{_alerts_url(account)}/{mine['id']}", headers=operator).status_code == 204
    )
    assert (
        client.delete(f"{_alerts_url(account)}/{theirs['id']}", headers=operator).status_code == 204
    )


def test_bad_alert_bodies_are_refused_with_what_to_do(client, funded, session_factory):
    alice, account = funded["alice"], funded["account"]
    cases = [
        ({}, "alert_threshold_required"),
        ({"rearm_margin": 5}, "alert_threshold_required"),
        ({"below": 500, "above": 500}, "alert_thresholds_out_of_order"),
        ({"below": 900, "above": 100}, "alert_thresholds_out_of_order"),
        ({"below": 1.5}, None),
        ({"below": "100"}, None),
        ({"below": True}, None),
        ({"below": 100, "rearm_margin": -1}, None),
        ({"below": 2**63}, None),
        ({"below": 100, "balance": 5}, None),
    ]
    for body, code in cases:
        response = _create(client, alice, account, **body)
        assert response.status_code == 422, (body, response.text)
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        if code:
            assert problem["code"] == code, (body, problem)
    not_a_uuid = client.post("/v1/accounts/nope/balance-alerts", json={"below": 1}, headers=alice)
    assert not_a_uuid.status_code == 422
    unknown = client.post(
        f"/v1/accounts/{uuid.uuid4()}/balance-alerts", json={"below": 1}, headers=alice
    )
    assert unknown.status_code == 404
    assert (
        client.get(_alerts_url(account), params={"cursor": "junk"}, headers=alice).status_code
        == 400
    )
    assert client.get(_alerts_url(account)).status_code == 401
    with session_factory() as session:  # nothing was left half-made by the refusals
        assert session.get(Account, uuid.UUID(account["id"])).balance_alert_count == 0


def test_an_account_holds_at_most_ten_alerts(client, funded, session_factory):
    alice, account = funded["alice"], funded["account"]
    for i in range(MAX_ALERTS_PER_ACCOUNT):
        assert _create(client, alice, account, below=i + 1).status_code == 201
    refused = _create(client, alice, account, below=100)
    assert refused.status_code == 422
    assert refused.json()["code"] == "too_many_alerts"
    assert "delete one" in refused.json()["detail"]
    with session_factory() as session:
        account_row = session.get(Account, uuid.UUID(account["id"]))
        assert account_row.balance_alert_count == MAX_ALERTS_PER_ACCOUNT  # the refusal rolled back


def test_the_alert_list_pages(client, funded):
    alice, account = funded["alice"], funded["account"]
    ids = [_create(client, alice, account, below=i + 1).json()["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        page = client.get(
            _alerts_url(account), params={"limit": 2, "cursor": cursor}, headers=alice
        ).json()
        seen += [a["id"] for a in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


# --- firing --------------------------------------------------------------------------


def _move(client, funded, amount: int) -> None:
    """Moves `amount` out of Alice's account (negative: into it, from the operator)."""
    if amount > 0:
        response = post_transfer(
            client, funded["alice"], funded["account"]["id"], funded["sink"]["number"], amount
        )
        assert response.status_code == 202, response.text
    else:
        post_deposit(client, funded["operator"], funded["account"]["id"], -amount)


def test_an_alert_fires_once_per_crossing_and_rearms_past_the_margin(client, funded, drain_pending):
    alice, account = funded["alice"], funded["account"]
    alert = _create(client, alice, account, below=5_000, rearm_margin=1_000).json()
    # balance: 10_000 → 6_000 → 4_000 (crosses) → 3_000 (stays under) → 5_500 (back, but
    # not by the margin) → 4_500 (no event: not re-armed) → 7_000 (re-armed) → 2_000 (crosses)
    expected_crossings = 0
    for amount, crosses in [
        (4_000, False),
        (2_000, True),
        (1_000, False),
        (-2_500, False),
        (1_000, False),
        (-2_500, False),
        (5_000, True),
    ]:
        _move(client, funded, amount)
        drain_pending()  # one at a time: each its own batch
        expected_crossings += crosses
    wait_for_events(client, alice, 1 + 7 + 2)  # the deposit, seven moves, two alerts
    fired = _balance_events(client, alice)
    assert len(fired) == expected_crossings == 2
    assert [e["type"] for e in fired] == ["balance.below"] * 2
    assert [e["data"]["balance"] for e in fired] == [4_000, 2_000]
    assert [e["data"]["balance_before"] for e in fired] == [6_000, 7_000]
    first = fired[0]["data"]
    assert first["alert_id"] == alert["id"] and first["account_id"] == account["id"]
    assert (first["threshold"], first["rearm_margin"], first["currency"]) == (5_000, 1_000, "USD")
    state = client.get(f"{_alerts_url(account)}/{alert['id']}", headers=alice).json()
    assert state["below_armed"] is False  # fired, waiting for the balance to come back


def test_crossings_inside_one_batch_each_fire_right_after_their_transfer(
    client, funded, drain_pending, session_factory
):
    alice, account, sink = funded["alice"], funded["account"], funded["sink"]
    spare = open_account(client, alice)
    post_deposit(client, funded["operator"], spare["id"], 20_000)
    drain_pending()
    _create(client, alice, account, below=5_000, above=12_000)
    # An atomic batch is applied in one transaction, in order: 10_000 → 4_000 (below) →
    # 13_000 (above; re-arms below) → 3_000 (below again) → 2_000 (nothing new).
    legs = [(account, sink, 6_000), (spare, account, 9_000), (account, sink, 10_000)]
    legs.append((account, sink, 1_000))
    batch = client.post(
        "/v1/transfer-batches",
        json={
            "atomic": True,
            "transfers": [
                {
                    "source_account_id": source["id"],
                    "destination_account_number": destination["number"],
                    "amount": amount,
                    "currency": "USD",
                }
                for source, destination, amount in legs
            ],
        },
        headers={**alice, **idem()},
    )
    assert batch.status_code == 202, batch.text
    transfers = batch.json()["transfers"]
    drain_pending()
    # deposits, the batch's four transfers, three alerts, the batch's completion
    events = wait_for_events(client, alice, 2 + 4 + 3 + 1)
    events = events[2:]
    assert [e["type"] for e in events if e["type"] != "transfer.succeeded"] == [
        "balance.below",
        "balance.above",
        "balance.below",
        "batch.completed",
    ]
    fired = [e for e in events if e["type"].startswith("balance.")]
    assert [e["data"]["transfer_id"] for e in fired] == [t["id"] for t in transfers[:3]]
    assert [e["data"]["balance"] for e in fired] == [4_000, 13_000, 3_000]
    # Each alert event directly follows the event of the transfer that crossed.
    for event in fired:
        before = events[events.index(event) - 1]
        assert before["type"] == "transfer.succeeded"
        assert before["data"]["transfer"]["id"] == event["data"]["transfer_id"]
    with session_factory() as session:
        ours = session.scalars(select(Event).where(Event.id.in_([e["id"] for e in events]))).all()
        assert len({r.xid for r in ours}) == 1  # all in the one batch's transaction


def test_an_alert_set_while_across_waits_for_the_balance_to_come_back(
    client, funded, drain_pending
):
    alice, account = funded["alice"], funded["account"]
    alert = _create(client, alice, account, below=20_000).json()
    assert alert["below_armed"] is False  # 10_000 is already under 20_000: no event for that
    _move(client, funded, 1_000)
    drain_pending()
    _move(client, funded, -15_000)  # 24_000: back over, re-armed
    drain_pending()
    _move(client, funded, 5_000)  # 19_000: crosses
    drain_pending()
    wait_for_events(client, alice, 3)
    fired = _balance_events(client, alice)
    assert [e["data"]["balance"] for e in fired] == [19_000]


def test_a_failed_transfer_and_a_failed_atomic_batch_fire_nothing(
    client, funded, drain_pending, session_factory
):
    alice, account, sink = funded["alice"], funded["account"], funded["sink"]
    alert = _create(client, alice, account, below=5_000).json()
    too_much = post_transfer(client, alice, account["id"], sink["number"], 50_000).json()
    batch = client.post(
        "/v1/transfer-batches",
        json={
            "atomic": True,
            "transfers": [
                {
                    "source_account_id": account["id"],
                    "destination_account_number": sink["number"],
                    "amount": amount,
                    "currency": "USD",
                }
                for amount in (8_000, 90_000)  # the first alone would cross; the second fails
            ],
        },
        headers={**alice, **idem()},
    )
    assert batch.status_code == 202, batch.text
    drain_pending()
    # After the funding deposit: three failed transfers, and the batch's completion.
    events = wait_for_events(client, alice, 1 + 3 + 1)[1:]
    assert [e["type"] for e in events].count("batch.completed") == 1
    events = [e for e in events if e["type"] != "batch.completed"]
    assert {e["data"]["transfer"]["status"] for e in events} == {"failed"}
    assert too_much["id"] in {e["data"]["transfer"]["id"] for e in events}
    assert _balance_events(client, alice) == []
    with session_factory() as session:
        assert session.get(BalanceAlert, uuid.UUID(alert["id"])).below_armed is True


def test_a_deleted_alert_fires_no_more(client, funded, drain_pending):
    alice, account = funded["alice"], funded["account"]
    alert = _create(client, alice, account, below=5_000).json()
    assert client.delete(f"{_alerts_url(account)}/{alert['id']}", headers=alice).status_code == 204
    _move(client, funded, 9_000)
    drain_pending()
    wait_for_events(client, alice, 1)
    assert _balance_events(client, alice) == []


def test_the_event_goes_to_the_alerts_creator(client, funded, drain_pending):
    alice, operator, account = funded["alice"], funded["operator"], funded["account"]
    _create(client, operator, account, above=10_500)
    _move(client, funded, -1_000)
    drain_pending()
    wait_for_events(client, operator, 2)  # the two deposits it made
    [fired] = _balance_events(client, operator)
    assert fired["type"] == "balance.above" and fired["data"]["balance"] == 11_000
    assert _balance_events(client, alice) == []


# --- the evaluation rule itself ---------------------------------------------------------


def _state(**kwargs: Any) -> AlertState:
    defaults: dict[str, Any] = {
        "id": uuid.uuid4(),
        "account_id": uuid.uuid4(),
        "created_by": uuid.uuid4(),
        "below": None,
        "above": None,
        "rearm_margin": 0,
        "below_armed": None,
        "above_armed": None,
        "created_at": None,
    }
    return AlertState(**{**defaults, **kwargs})


def test_the_rule_counts_real_crossings_over_a_random_walk():
    import random

    rng = random.Random(12)
    for _ in range(200):
        below, margin = rng.randint(-50, 50), rng.randint(0, 30)
        alert = _state(below=below, rearm_margin=margin, below_armed=True)
        balance, armed, expected = below + margin, True, 0
        entries = []
        for _ in range(100):
            balance += rng.randint(-40, 40)
            entries.append({"account_id": alert.account_id, "balance_after": balance})
            # A crossing: from not-under to under while armed; re-armed only past the margin.
            if armed and balance < below:
                armed, expected = False, expected + 1
            elif not armed and balance >= below + margin:
                armed = True
        crossings = evaluate([alert], entries)
        assert len(crossings) == expected
        assert all(c.entry["balance_after"] < below for c in crossings)
        assert alert.below_armed is armed
