"""Cancel, deadlines and scheduling, backpressure, reversals and holds (issue 11).

In-process gateway on the real database and Redis; the engine runs when a test calls
`drain_pending` (or `drain`), the sweeper's steps when a test calls them. Every legal
transition and every illegal one the API can be asked for has a test here.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from domain.lanes import slot_of
from domain.repositories import verification as verification_repo
from domain.uow import unit_of_work
from tests.factories import (
    idem,
    lane_of,
    open_account,
    operator_headers,
    post_deposit,
    post_transfer,
    register_and_login,
    wait_for_events,
)
from workers.tasks import drain, expire_holds


@pytest.fixture
def funded(client, session_factory, drain_pending):
    """Alice with 10,000 on account `a`; Bob with an empty account `b`; an operator."""
    operator = operator_headers(client, session_factory)
    alice, bob = register_and_login(client), register_and_login(client)
    a, b = open_account(client, alice), open_account(client, bob)
    post_deposit(client, operator, a["id"], 10_000)
    drain_pending()
    return {"operator": operator, "alice": alice, "bob": bob, "a": a, "b": b}


def _get(client, headers, path) -> dict[str, Any]:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _account(client, headers, account) -> dict[str, Any]:
    return _get(client, headers, f"/v1/accounts/{account['id']}")


def _transfer(client, headers, transfer_id) -> dict[str, Any]:
    return _get(client, headers, f"/v1/transfers/{transfer_id}")


def _send(client, f, amount, **extra):
    body = {
        "source_account_id": f["a"]["id"],
        "destination_account_number": f["b"]["number"],
        "amount": amount,
        "currency": "USD",
        **extra,
    }
    return client.post("/v1/transfers", json=body, headers={**f["alice"], **idem()})


def _hold(client, f, amount, expires_in=3600):
    return client.post(
        "/v1/holds",
        json={
            "source_account_id": f["a"]["id"],
            "destination_account_number": f["b"]["number"],
            "amount": amount,
            "currency": "USD",
            "expires_in_seconds": expires_in,
        },
        headers={**f["alice"], **idem()},
    )


def _capture(client, headers, hold_id, amount=None):
    body = {} if amount is None else {"amount": amount}
    return client.post(f"/v1/holds/{hold_id}/capture", json=body, headers={**headers, **idem()})


def _void(client, headers, hold_id):
    return client.post(f"/v1/holds/{hold_id}/void", headers={**headers, **idem()})


def _reverse(client, headers, transfer_id, amount=None, reason=None):
    body: dict[str, Any] = {}
    if amount is not None:
        body["amount"] = amount
    if reason is not None:
        body["reason"] = reason
    return client.post(
        f"/v1/transfers/{transfer_id}/reversals", json=body, headers={**headers, **idem()}
    )


def _check(session_factory, name):
    with session_factory() as session:
        return verification_repo.run_check(session, verification_repo.check_named(name))


def _accepted(response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


# --- cancel ---------------------------------------------------------------------------


def test_cancel_a_pending_transfer(client, funded, drain_pending):
    f = funded
    sent = _accepted(_send(client, f, 700))
    canceled = client.post(f"/v1/transfers/{sent['id']}/cancel", headers=f["alice"])
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["completed_at"] is not None
    drain_pending()
    assert _transfer(client, f["alice"], sent["id"])["status"] == "canceled"
    assert _account(client, f["alice"], f["a"])["balance"] == 10_000
    # Canceling again answers the same; the event went out once.
    again = client.post(f"/v1/transfers/{sent['id']}/cancel", headers=f["alice"])
    assert again.status_code == 200 and again.json()["status"] == "canceled"
    events = [e for e in wait_for_events(client, f["alice"], 2) if e["type"].endswith("canceled")]
    assert [e["data"]["transfer"]["id"] for e in events] == [sent["id"]]


def test_cancel_after_apply_is_409(client, funded, drain_pending):
    f = funded
    sent = _accepted(_send(client, f, 700))
    drain_pending()
    refused = client.post(f"/v1/transfers/{sent['id']}/cancel", headers=f["alice"])
    assert refused.status_code == 409
    assert refused.json()["code"] == "transfer_not_pending"
    assert "reverse" in refused.json()["detail"]


def test_only_the_initiator_or_an_operator_cancels(client, funded, drain_pending):
    f = funded
    sent = _accepted(_send(client, f, 100))
    # Bob sees it (it is to his account) but did not send it.
    refused = client.post(f"/v1/transfers/{sent['id']}/cancel", headers=f["bob"])
    assert refused.status_code == 403 and refused.json()["code"] == "cancel_forbidden"
    stranger = register_and_login(client)
    assert client.post(f"/v1/transfers/{sent['id']}/cancel", headers=stranger).status_code == 404
    by_operator = client.post(f"/v1/transfers/{sent['id']}/cancel", headers=f["operator"])
    assert by_operator.status_code == 200 and by_operator.json()["status"] == "canceled"


def test_cancel_racing_a_drain_has_exactly_one_outcome(client, funded, session_factory):
    f = funded
    lane = lane_of(uuid.UUID(f["a"]["id"]))
    results = []
    for _ in range(8):
        sent = _accepted(_send(client, f, 10))
        barrier = threading.Barrier(2)
        answers: dict[str, Any] = {}

        def cancel(transfer_id=sent["id"], answers=answers, barrier=barrier):
            barrier.wait()
            answers["cancel"] = client.post(
                f"/v1/transfers/{transfer_id}/cancel", headers=f["alice"]
            ).status_code

        def run_drain(barrier=barrier):
            barrier.wait()
            drain(lane)

        threads = [threading.Thread(target=cancel), threading.Thread(target=run_drain)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = _transfer(client, f["alice"], sent["id"])
        with session_factory() as session:
            entries = session.execute(
                text("SELECT count(*) FROM ledger_entries WHERE transfer_id = :t"),
                {"t": sent["id"]},
            ).scalar_one()
        if answers["cancel"] == 200:
            assert final["status"] == "canceled" and entries == 0
        else:
            assert answers["cancel"] == 409
            assert final["status"] == "succeeded" and entries == 2
        results.append(final["status"])
    succeeded = results.count("succeeded")
    assert _account(client, f["alice"], f["a"])["balance"] == 10_000 - 10 * succeeded


# --- deadlines and scheduling ----------------------------------------------------------


def test_execute_before_passed_fails_expired(client, funded, drain_pending):
    f = funded
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    sent = _accepted(_send(client, f, 100, execute_before=soon))
    assert sent["execute_before"] is not None
    time.sleep(1.2)
    drain_pending()
    done = _transfer(client, f["alice"], sent["id"])
    assert (done["status"], done["failure_code"]) == ("failed", "expired")
    assert _account(client, f["alice"], f["a"])["balance"] == 10_000


def test_execute_before_in_time_is_applied(client, funded, drain_pending):
    f = funded
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    sent = _accepted(_send(client, f, 100, execute_before=later))
    drain_pending()
    assert _transfer(client, f["alice"], sent["id"])["status"] == "succeeded"


def test_execute_at_waits_and_keeps_fifo_among_due_transfers(
    client, funded, drain_pending, session_factory
):
    from domain.services import sweeper

    f = funded
    at = datetime.now(UTC) + timedelta(seconds=2)
    scheduled = _accepted(_send(client, f, 9_000, execute_at=at.isoformat()))
    first = _accepted(_send(client, f, 600))
    second = _accepted(_send(client, f, 500))
    drain_pending()
    # The due ones went through in order; the scheduled one waits and holds nothing back.
    assert _transfer(client, f["alice"], scheduled["id"])["status"] == "pending"
    assert _transfer(client, f["alice"], first["id"])["status"] == "succeeded"
    assert _transfer(client, f["alice"], second["id"])["status"] == "succeeded"
    # Everything due is applied, so only the scheduled transfer is pending in its slot:
    # the sweeper leaves it alone until its time, then wakes its lane.
    slot = slot_of(uuid.UUID(f["a"]["id"]))
    with unit_of_work(session_factory) as uow:
        stale = sweeper.slots_needing_drain(session=uow.session, stale_after_seconds=0)
    assert slot not in stale
    time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 0.2)
    with unit_of_work(session_factory) as uow:
        due_slots = sweeper.slots_needing_drain(session=uow.session, stale_after_seconds=0)
    assert slot in due_slots
    drain_pending()
    done = _transfer(client, f["alice"], scheduled["id"])
    # 10,000 - 600 - 500 = 8,900 left: the scheduled 9,000 no longer fits.
    assert (done["status"], done["failure_code"]) == ("failed", "insufficient_funds")


def test_execute_before_must_follow_execute_at(client, funded):
    f = funded
    now = datetime.now(UTC)
    refused = _send(
        client,
        f,
        100,
        execute_at=(now + timedelta(hours=2)).isoformat(),
        execute_before=(now + timedelta(hours=1)).isoformat(),
    )
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_schedule"
    naive = _send(client, f, 100, execute_at="2030-01-01T00:00:00")
    assert naive.status_code == 422


# --- backpressure ----------------------------------------------------------------------


def test_backlogged_account_gets_429_and_others_do_not(settings, funded, session_factory):
    from gateway.app import create_app

    f = funded
    tight = settings.model_copy(
        update={
            "max_pending_per_account": 3,
            "redis_prefix": f"{settings.redis_prefix}inproc:",
        }
    )
    with TestClient(create_app(tight), raise_server_exceptions=False) as client:
        for _ in range(3):
            _accepted(_send(client, f, 10))
        refused = _send(client, f, 10)
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "account_backlog"
        assert 1 <= int(refused.headers["Retry-After"]) <= 3600
        assert f["a"]["id"] in refused.json()["detail"]
        # Another account of the same user is not affected; nor is a deposit into `a`.
        other = open_account(client, f["alice"])
        post_deposit(client, f["operator"], other["id"], 100)
        moved = client.post(
            "/v1/transfers",
            json={
                "source_account_id": other["id"],
                "destination_account_number": f["b"]["number"],
                "amount": 10,
                "currency": "USD",
            },
            headers={**f["alice"], **idem()},
        )
        assert moved.status_code == 202, moved.text
        post_deposit(client, f["operator"], f["a"]["id"], 10)
        # Draining the backlog lets debits through again.
        drain(lane_of(uuid.UUID(f["a"]["id"])))
        assert _send(client, f, 10).status_code == 202


def test_retry_after_follows_the_drain_rate():
    from domain.services.acceptance import backlog_retry_after

    # 120 applied in the last 60 s (2/s); 10 over the limit: about 5.5 s.
    assert backlog_retry_after(pending=110, limit=100, drained=120, window_seconds=60) == 6
    assert backlog_retry_after(pending=100, limit=100, drained=6000, window_seconds=60) == 1
    # Nothing drained lately: the whole window.
    assert backlog_retry_after(pending=100, limit=100, drained=0, window_seconds=60) == 60


# --- reversals -------------------------------------------------------------------------


def _paid(client, f, drain_pending, amount=1_000) -> dict[str, Any]:
    sent = _accepted(_send(client, f, amount))
    drain_pending()
    assert _transfer(client, f["alice"], sent["id"])["status"] == "succeeded"
    return sent


def test_partial_then_full_reversal(client, funded, drain_pending, session_factory):
    f = funded
    paid = _paid(client, f, drain_pending)
    part = _accepted(_reverse(client, f["bob"], paid["id"], 300, reason="item returned"))
    assert (part["kind"], part["reverses"], part["amount"]) == ("reversal", paid["id"], 300)
    assert part["source_account_id"] == f["b"]["id"]
    assert part["description"] == "item returned"
    rest = _accepted(_reverse(client, f["operator"], paid["id"]))
    assert rest["amount"] == 700  # everything left
    drain_pending()
    assert _transfer(client, f["bob"], part["id"])["status"] == "succeeded"
    assert _transfer(client, f["bob"], rest["id"])["status"] == "succeeded"
    assert _account(client, f["alice"], f["a"])["balance"] == 10_000
    assert _account(client, f["bob"], f["b"])["balance"] == 0
    beyond = _reverse(client, f["bob"], paid["id"], 1)
    assert beyond.status_code == 409 and beyond.json()["code"] == "reversal_exceeds_original"
    assert _check(session_factory, "reversals_within_original") == []


def test_reversal_beyond_the_original_is_409(client, funded, drain_pending):
    f = funded
    paid = _paid(client, f, drain_pending)
    refused = _reverse(client, f["bob"], paid["id"], 1_001)
    assert refused.status_code == 409
    assert refused.json()["code"] == "reversal_exceeds_original"
    assert "1000" in refused.json()["detail"]


def test_reversing_a_pending_or_failed_transfer_is_409(client, funded, drain_pending):
    f = funded
    pending = _accepted(_send(client, f, 100))
    refused = _reverse(client, f["bob"], pending["id"])
    assert refused.status_code == 409 and refused.json()["code"] == "transfer_not_succeeded"
    failed = _accepted(_send(client, f, 50_000))
    drain_pending()
    assert _transfer(client, f["alice"], failed["id"])["status"] == "failed"
    refused = _reverse(client, f["bob"], failed["id"])
    assert refused.status_code == 409 and refused.json()["code"] == "transfer_not_succeeded"


def test_who_may_reverse(client, funded, drain_pending):
    f = funded
    paid = _paid(client, f, drain_pending)
    # The payer sees the transfer but may not pull the money back.
    payer = _reverse(client, f["alice"], paid["id"])
    assert payer.status_code == 403 and payer.json()["code"] == "reversal_forbidden"
    assert _reverse(client, register_and_login(client), paid["id"]).status_code == 404
    assert _reverse(client, f["bob"], uuid.uuid4()).status_code == 404


def test_a_reversal_itself_is_not_reversible(client, funded, drain_pending):
    f = funded
    paid = _paid(client, f, drain_pending)
    back = _accepted(_reverse(client, f["bob"], paid["id"], 100))
    drain_pending()
    refused = _reverse(client, f["operator"], back["id"])
    assert refused.status_code == 409 and refused.json()["code"] == "not_reversible"


def test_withdrawals_are_not_reversible_and_deposits_are(client, funded, drain_pending):
    """Reversing a withdrawal would credit a customer from the settlement account: a
    deposit without the deposit rules (approvals, own_account)."""
    f = funded
    out = client.post(
        "/v1/withdrawals",
        json={"account_id": f["a"]["id"], "amount": 100, "currency": "USD"},
        headers={**f["alice"], **idem()},
    )
    drain_pending()
    refused = _reverse(client, f["operator"], out.json()["id"])
    assert refused.status_code == 409 and refused.json()["code"] == "not_reversible"
    assert "deposit" in refused.json()["detail"]
    deposit = post_deposit(client, f["operator"], f["b"]["id"], 300)
    drain_pending()
    taken_back = _accepted(_reverse(client, f["operator"], deposit["id"], 300))
    drain_pending()
    assert _transfer(client, f["operator"], taken_back["id"])["status"] == "succeeded"
    assert _account(client, f["bob"], f["b"])["balance"] == 0


def test_an_operator_cannot_reverse_into_their_own_account(
    client, funded, drain_pending, session_factory
):
    from tests.factories import login, make_user

    f = funded
    insider = make_user(session_factory, role="operator")
    insider_headers = login(client, insider.email)
    own = open_account(client, insider_headers)
    post_deposit(client, f["operator"], own["id"], 1_000)
    drain_pending()
    paid = _accepted(
        client.post(
            "/v1/transfers",
            json={
                "source_account_id": own["id"],
                "destination_account_number": f["b"]["number"],
                "amount": 1_000,
                "currency": "USD",
            },
            headers={**insider_headers, **idem()},
        )
    )
    drain_pending()
    refused = _reverse(client, insider_headers, paid["id"])
    assert refused.status_code == 403 and refused.json()["code"] == "own_account"
    # The payee may refund it, and another operator may reverse it.
    assert _reverse(client, f["operator"], paid["id"], 10).status_code == 202
    assert _reverse(client, f["bob"], paid["id"], 10).status_code == 202


def test_reversal_fails_when_the_destination_has_spent_it(client, funded, drain_pending):
    f = funded
    paid = _paid(client, f, drain_pending)
    # Bob pays it all out first.
    out = client.post(
        "/v1/withdrawals",
        json={"account_id": f["b"]["id"], "amount": 1_000, "currency": "USD"},
        headers={**f["bob"], **idem()},
    )
    assert out.status_code == 202
    drain_pending()
    refund = _accepted(_reverse(client, f["bob"], paid["id"]))
    drain_pending()
    done = _transfer(client, f["bob"], refund["id"])
    assert (done["status"], done["failure_code"]) == ("failed", "insufficient_funds")
    # A failed reversal does not count: the whole amount can be reversed again.
    assert _accepted(_reverse(client, f["operator"], paid["id"]))["amount"] == 1_000


def test_fifty_concurrent_partial_reversals_never_exceed_the_original(
    client, funded, drain_pending, session_factory
):
    f = funded
    paid = _paid(client, f, drain_pending)
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: _reverse(client, f["bob"], paid["id"], 30), range(50)))
    codes = [a.status_code for a in answers]
    assert codes.count(202) == 33  # 33 x 30 = 990; a 34th would make 1,020
    assert all(
        a.json()["code"] == "reversal_exceeds_original" for a in answers if a.status_code != 202
    )
    drain_pending()
    with session_factory() as session:
        reversed_total = session.execute(
            text("SELECT sum(amount) FROM transfers WHERE reverses = :t AND status = 'succeeded'"),
            {"t": paid["id"]},
        ).scalar_one()
    assert reversed_total == 990
    assert _check(session_factory, "reversals_within_original") == []


def test_the_database_refuses_reversals_beyond_the_original(
    client, funded, drain_pending, session_factory
):
    """Whatever the gateway checks, the insert trigger has the last word."""
    f = funded
    paid = _paid(client, f, drain_pending)
    _accepted(_reverse(client, f["bob"], paid["id"], 900))
    with pytest.raises(DBAPIError, match="reversals of"), unit_of_work(session_factory) as uow:
        uow.session.execute(
            text(
                "INSERT INTO transfers (id, kind, status, source_account_id,"
                " destination_account_id, amount, currency, initiated_by, lane, reverses)"
                " SELECT gen_random_uuid(), 'reversal', 'pending', destination_account_id,"
                " source_account_id, 101, currency, initiated_by, 0, id"
                " FROM transfers WHERE id = :t"
            ),
            {"t": paid["id"]},
        )


# --- holds -----------------------------------------------------------------------------


def test_hold_then_partial_capture(client, funded, drain_pending, session_factory):
    f = funded
    hold = _accepted(_hold(client, f, 2_000))
    assert (hold["kind"], hold["status"]) == ("hold", "pending")
    assert hold["expires_at"] is not None
    drain_pending()
    assert _transfer(client, f["alice"], hold["id"])["status"] == "held"
    account = _account(client, f["alice"], f["a"])
    assert (account["balance"], account["available_balance"]) == (10_000, 8_000)
    capture = _accepted(_capture(client, f["alice"], hold["id"], 1_500))
    assert (capture["kind"], capture["hold_id"], capture["amount"]) == (
        "capture",
        hold["id"],
        1_500,
    )
    drain_pending()
    assert _transfer(client, f["alice"], capture["id"])["status"] == "succeeded"
    done = _transfer(client, f["alice"], hold["id"])
    assert (done["status"], done["captured_amount"]) == ("captured", 1_500)
    account = _account(client, f["alice"], f["a"])
    assert (account["balance"], account["available_balance"]) == (8_500, 8_500)
    assert _account(client, f["bob"], f["b"])["balance"] == 1_500
    types = [e["type"] for e in wait_for_events(client, f["bob"], 2)]
    assert "hold.held" in types and "hold.captured" in types
    captured = next(e for e in wait_for_events(client, f["bob"], 2) if e["type"] == "hold.captured")
    assert captured["data"]["transfer"]["id"] == hold["id"]
    assert [e["amount"] for e in captured["data"]["entries"]] == [1_500]
    for name in ("captured_holds_have_their_entries", "available_balances_recompute"):
        assert _check(session_factory, name) == []
    # A captured hold is done: no second capture, no void.
    again = _capture(client, f["alice"], hold["id"])
    assert again.status_code == 409 and again.json()["code"] == "hold_not_active"
    assert _void(client, f["alice"], hold["id"]).status_code == 409


def test_void_releases_the_hold(client, funded, drain_pending):
    f = funded
    hold = _accepted(_hold(client, f, 2_000))
    drain_pending()
    void = _accepted(_void(client, f["alice"], hold["id"]))
    assert void["kind"] == "void"
    drain_pending()
    assert _transfer(client, f["alice"], hold["id"])["status"] == "voided"
    account = _account(client, f["alice"], f["a"])
    assert (account["balance"], account["available_balance"]) == (10_000, 10_000)
    after = _capture(client, f["alice"], hold["id"])
    assert after.status_code == 409 and after.json()["code"] == "hold_not_active"


def test_a_hold_needs_available_funds_and_debits_respect_holds(client, funded, drain_pending):
    f = funded
    big = _accepted(_hold(client, f, 9_000))
    too_big = _accepted(_hold(client, f, 1_001))  # 1,000 left available
    spend = _accepted(_send(client, f, 1_001))
    fits = _accepted(_send(client, f, 1_000))
    drain_pending()
    assert _transfer(client, f["alice"], big["id"])["status"] == "held"
    failed = _transfer(client, f["alice"], too_big["id"])
    assert (failed["status"], failed["failure_code"]) == ("failed", "insufficient_funds")
    failed = _transfer(client, f["alice"], spend["id"])
    assert (failed["status"], failed["failure_code"]) == ("failed", "insufficient_funds")
    assert _transfer(client, f["alice"], fits["id"])["status"] == "succeeded"
    # A failed hold can never be captured.
    refused = _capture(client, f["alice"], too_big["id"])
    assert refused.status_code == 409 and refused.json()["code"] == "hold_not_active"


def test_capture_above_the_held_amount_is_422(client, funded, drain_pending):
    f = funded
    hold = _accepted(_hold(client, f, 500))
    drain_pending()
    refused = _capture(client, f["alice"], hold["id"], 501)
    assert refused.status_code == 422 and refused.json()["code"] == "capture_exceeds_hold"


def test_double_capture_in_flight_has_one_winner(client, funded, drain_pending):
    f = funded
    hold = _accepted(_hold(client, f, 500))
    drain_pending()
    first = _accepted(_capture(client, f["alice"], hold["id"], 100))
    second = _accepted(_capture(client, f["alice"], hold["id"], 200))
    void = _accepted(_void(client, f["alice"], hold["id"]))
    drain_pending()
    assert _transfer(client, f["alice"], first["id"])["status"] == "succeeded"
    for loser in (second, void):
        done = _transfer(client, f["alice"], loser["id"])
        assert (done["status"], done["failure_code"]) == ("failed", "hold_not_active")
    assert _account(client, f["alice"], f["a"])["balance"] == 9_900


def test_capture_of_a_pending_hold_waits_for_it(client, funded, drain_pending):
    f = funded
    hold = _accepted(_hold(client, f, 500))
    capture = _accepted(_capture(client, f["alice"], hold["id"]))
    drain_pending()
    assert _transfer(client, f["alice"], hold["id"])["status"] == "captured"
    assert _transfer(client, f["alice"], capture["id"])["status"] == "succeeded"


def test_hold_expires_and_cannot_be_captured(client, funded, drain_pending, session_factory):
    f = funded
    hold = _accepted(_hold(client, f, 700, expires_in=1))
    drain_pending()
    assert _account(client, f["alice"], f["a"])["available_balance"] == 9_300
    time.sleep(1.2)
    refused = _capture(client, f["alice"], hold["id"])
    assert refused.status_code == 409 and refused.json()["code"] == "hold_not_active"
    assert expire_holds() >= 1
    assert _transfer(client, f["alice"], hold["id"])["status"] == "expired"
    assert _account(client, f["alice"], f["a"])["available_balance"] == 10_000
    assert "hold.expired" in [e["type"] for e in wait_for_events(client, f["alice"], 3)]
    assert _check(session_factory, "available_balances_recompute") == []


def test_capture_racing_expiry_has_exactly_one_outcome(client, funded, session_factory):
    f = funded
    lane = lane_of(uuid.UUID(f["a"]["id"]))
    outcomes = []
    for _ in range(4):
        hold = _accepted(_hold(client, f, 100, expires_in=1))
        drain(lane)
        capture = _accepted(_capture(client, f["alice"], hold["id"]))
        # Let the expiry come close, then race the capture's drain against the sweeper.
        time.sleep(0.95)
        barrier = threading.Barrier(2)

        def run_drain(barrier=barrier):
            barrier.wait()
            drain(lane)

        def run_expiry(barrier=barrier):
            barrier.wait()
            time.sleep(0.05)
            expire_holds()

        threads = [threading.Thread(target=run_drain), threading.Thread(target=run_expiry)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.2)
        expire_holds()
        drain(lane)
        final = _transfer(client, f["alice"], hold["id"])["status"]
        command = _transfer(client, f["alice"], capture["id"])
        assert final in ("captured", "expired")
        assert (command["status"] == "succeeded") == (final == "captured")
        outcomes.append(final)
    captured = outcomes.count("captured")
    account = _account(client, f["alice"], f["a"])
    assert (account["balance"], account["available_balance"]) == (
        10_000 - 100 * captured,
        10_000 - 100 * captured,
    )
    assert _check(session_factory, "available_balances_recompute") == []
    assert _check(session_factory, "captured_holds_have_their_entries") == []


def test_a_settled_hold_never_changes_again_in_the_database(
    client, funded, drain_pending, session_factory
):
    f = funded
    hold = _accepted(_hold(client, f, 100))
    drain_pending()
    _accepted(_void(client, f["alice"], hold["id"]))
    drain_pending()
    for status in ("captured", "held", "expired", "pending"):
        with (
            pytest.raises(DBAPIError, match="cannot go from voided"),
            unit_of_work(session_factory) as uow,
        ):
            uow.session.execute(
                text(
                    "UPDATE transfers SET status = :s, captured_amount = CASE WHEN"
                    " :s = 'captured' THEN 100 END WHERE id = :t"
                ),
                {"s": status, "t": hold["id"]},
            )


def test_hold_expiry_is_bounded(client, funded):
    f = funded
    assert _hold(client, f, 100, expires_in=0).status_code == 422
    assert _hold(client, f, 100, expires_in=7 * 24 * 3600 + 1).status_code == 422
    missing = client.post(
        "/v1/holds",
        json={
            "source_account_id": f["a"]["id"],
            "destination_account_number": f["b"]["number"],
            "amount": 100,
            "currency": "USD",
        },
        headers={**f["alice"], **idem()},
    )
    assert missing.status_code == 422


def test_only_the_holds_parties_act_on_it(client, funded, drain_pending):
    f = funded
    hold = _accepted(_hold(client, f, 100))
    drain_pending()
    # Bob (the destination) cannot capture or void Alice's hold; a stranger cannot see it.
    assert _capture(client, f["bob"], hold["id"]).status_code == 404
    assert _void(client, register_and_login(client), hold["id"]).status_code == 404
    assert _capture(client, f["alice"], f["a"]["id"]).status_code == 404  # not a hold
    # Capture and void replay under their Idempotency-Key like any money request.
    key = idem()
    first = client.post(f"/v1/holds/{hold['id']}/void", headers={**f["alice"], **key})
    again = client.post(f"/v1/holds/{hold['id']}/void", headers={**f["alice"], **key})
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["id"] == again.json()["id"]


def test_new_money_requests_show_in_transfer_lists(client, funded, drain_pending):
    f = funded
    hold = _accepted(_hold(client, f, 100))
    drain_pending()
    listed = _get(client, f["alice"], f"/v1/transfers?account_id={f['a']['id']}&status=held")
    assert [t["id"] for t in listed["data"]] == [hold["id"]]
    post_transfer(client, f["alice"], f["a"]["id"], f["b"]["number"], 1)


def test_a_large_scheduled_deposit_keeps_its_schedule_through_approval(
    client, funded, session_factory, settings
):
    from tests.factories import decide

    f = funded
    at = datetime.now(UTC) + timedelta(hours=1)
    parked = client.post(
        "/v1/deposits",
        json={
            "account_id": f["b"]["id"],
            "amount": settings.approval_threshold,
            "currency": "USD",
            "execute_at": at.isoformat(),
        },
        headers={**f["operator"], **idem()},
    )
    assert parked.status_code == 202 and "action" in parked.json(), parked.text
    approver = operator_headers(client, session_factory)
    approved = decide(client, approver, parked.json()["id"], "approve")
    assert approved.status_code == 200, approved.text
    deposit = _transfer(client, f["operator"], approved.json()["transfer_id"])
    assert deposit["status"] == "pending"
    assert datetime.fromisoformat(deposit["execute_at"]) == at


def test_an_atomic_batch_item_cannot_be_canceled_alone(client, funded):
    f = funded
    item = {
        "source_account_id": f["a"]["id"],
        "destination_account_number": f["b"]["number"],
        "amount": 10,
        "currency": "USD",
    }
    batch = client.post(
        "/v1/transfer-batches",
        json={"transfers": [item, item], "atomic": True},
        headers={**f["alice"], **idem()},
    )
    assert batch.status_code == 202, batch.text
    first = batch.json()["transfers"][0]["id"]
    refused = client.post(f"/v1/transfers/{first}/cancel", headers=f["alice"])
    assert refused.status_code == 409 and refused.json()["code"] == "atomic_batch_item"


def test_a_canceled_pending_hold_is_never_held(client, funded, drain_pending):
    f = funded
    hold = _accepted(_hold(client, f, 300))
    capture = _accepted(_capture(client, f["alice"], hold["id"]))
    canceled = client.post(f"/v1/transfers/{hold['id']}/cancel", headers=f["alice"])
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    drain_pending()
    done = _transfer(client, f["alice"], capture["id"])
    assert (done["status"], done["failure_code"]) == ("failed", "hold_not_active")
    account = _account(client, f["alice"], f["a"])
    assert (account["balance"], account["available_balance"]) == (10_000, 10_000)
    # A held hold is not canceled but voided.
    held = _accepted(_hold(client, f, 300))
    drain_pending()
    refused = client.post(f"/v1/transfers/{held['id']}/cancel", headers=f["alice"])
    assert refused.status_code == 409 and "void" in refused.json()["detail"]


def test_verify_names_broken_holds_and_reversals(
    client, funded, drain_pending, owner_session_factory
):
    """The new `settle verify` checks find what they look for: an attacker holding the
    owner role switches the guards off and breaks each invariant (rolled back after)."""
    f = funded
    paid = _paid(client, f, drain_pending)
    hold = _accepted(_hold(client, f, 400))
    drain_pending()
    with owner_session_factory() as session:
        session.execute(text("ALTER TABLE transfers DISABLE TRIGGER USER"))
        session.execute(
            text(
                "INSERT INTO transfers (id, kind, status, source_account_id,"
                " destination_account_id, amount, currency, initiated_by, lane, reverses)"
                " SELECT gen_random_uuid(), 'reversal', 'pending', destination_account_id,"
                " source_account_id, amount + 1, currency, initiated_by, 0, id"
                " FROM transfers WHERE id = :t"
            ),
            {"t": paid["id"]},
        )
        # Captured without a capture (so without entries), and the account's held
        # amount no longer matches its active holds.
        session.execute(
            text(
                "UPDATE transfers SET status = 'captured', captured_amount = amount,"
                " completed_at = now() WHERE id = :h"
            ),
            {"h": hold["id"]},
        )
        found = {
            name: verification_repo.run_check(session, verification_repo.check_named(name))
            for name in (
                "reversals_within_original",
                "captured_holds_have_their_entries",
                "available_balances_recompute",
            )
        }
        session.rollback()
    assert [r["transfer"] for r in found["reversals_within_original"]] == [paid["id"]]
    assert [r["transfer"] for r in found["captured_holds_have_their_entries"]] == [hold["id"]]
    assert [(r["account"], r["held"]) for r in found["available_balances_recompute"]] == [
        (f["a"]["number"], 400)
    ]
