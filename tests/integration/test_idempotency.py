"""Idempotency-Key at this stage: a replay returns the same transfer and never creates another."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select, text

from domain.models import Transfer
from tests.factories import login, make_user, open_account, operator_headers, register_and_login


def _count_for(session_factory, account_id):
    with session_factory() as session:
        return session.scalar(
            select(func.count())
            .select_from(Transfer)
            .where(Transfer.destination_account_id == account_id)
        )


def test_replay_returns_original_response(client, session_factory):
    operator = operator_headers(client, session_factory)
    account = open_account(client, register_and_login(client))
    body = {"account_id": account["id"], "amount": 500, "currency": "USD"}
    headers = {**operator, "Idempotency-Key": "deposit-once"}
    first = client.post("/v1/deposits", json=body, headers=headers)
    second = client.post("/v1/deposits", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert _count_for(session_factory, account["id"]) == 1


def test_same_key_different_request_is_422(client, session_factory):
    operator = operator_headers(client, session_factory)
    account = open_account(client, register_and_login(client))
    headers = {**operator, "Idempotency-Key": "deposit-k"}
    body = {"account_id": account["id"], "amount": 500, "currency": "USD"}
    assert client.post("/v1/deposits", json=body, headers=headers).status_code == 202
    changed = client.post("/v1/deposits", json={**body, "amount": 501}, headers=headers)
    assert changed.status_code == 422
    assert changed.json()["code"] == "idempotency_key_reused"
    assert _count_for(session_factory, account["id"]) == 1


def test_keys_are_scoped_per_user(client, session_factory):
    first_operator = operator_headers(client, session_factory)
    second_operator = operator_headers(client, session_factory)
    account = open_account(client, register_and_login(client))
    body = {"account_id": account["id"], "amount": 500, "currency": "USD"}
    one = client.post(
        "/v1/deposits", json=body, headers={**first_operator, "Idempotency-Key": "shared"}
    )
    two = client.post(
        "/v1/deposits", json=body, headers={**second_operator, "Idempotency-Key": "shared"}
    )
    assert one.status_code == two.status_code == 202
    assert one.json()["id"] != two.json()["id"]
    assert "Idempotent-Replayed" not in two.headers


def test_fifty_concurrent_identical_requests_create_one_transfer(client, session_factory):
    operator = operator_headers(client, session_factory)
    account = open_account(client, register_and_login(client))
    body = {"account_id": account["id"], "amount": 700, "currency": "USD"}
    headers = {**operator, "Idempotency-Key": "burst"}
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(
            pool.map(lambda _: client.post("/v1/deposits", json=body, headers=headers), range(50))
        )
    assert {r.status_code for r in responses} <= {202, 409}
    originals = [
        r for r in responses if r.status_code == 202 and "Idempotent-Replayed" not in r.headers
    ]
    assert len(originals) == 1
    accepted_ids = {r.json()["id"] for r in responses if r.status_code == 202}
    assert accepted_ids == {originals[0].json()["id"]}
    for conflict in (r for r in responses if r.status_code == 409):
        assert conflict.json()["code"] == "idempotency_key_in_flight"
    assert _count_for(session_factory, account["id"]) == 1


def test_key_in_flight_answers_409(client, session_factory):
    """While another transaction holds the key's claim, a request with it gets 409."""
    operator_user = make_user(session_factory, role="operator")
    operator = login(client, operator_user.email)
    account = open_account(client, register_and_login(client))
    body = {"account_id": account["id"], "amount": 5, "currency": "USD"}
    with session_factory() as first, first.begin():
        # The claim settle_accept takes on (user, key), held by this open transaction.
        first.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:claim, 0))"),
            {"claim": f"idempotency:{operator_user.id}:slow-key"},
        )
        response = client.post(
            "/v1/deposits", json=body, headers={**operator, "Idempotency-Key": "slow-key"}
        )
        assert response.status_code == 409
        assert response.json()["code"] == "idempotency_key_in_flight"
    # Once the first finishes, the key works normally.
    retry = client.post(
        "/v1/deposits", json=body, headers={**operator, "Idempotency-Key": "slow-key"}
    )
    assert retry.status_code == 202
    assert _count_for(session_factory, account["id"]) == 1


def test_keys_past_retention_are_purged(client, session_factory, owner_session_factory):
    from datetime import UTC, datetime, timedelta

    from domain.models import IdempotencyKey
    from domain.services.transfers import purge_idempotency_keys

    operator = operator_headers(client, session_factory)
    account = open_account(client, register_and_login(client))
    key = f"old-{uuid.uuid4()}"
    body = {"account_id": account["id"], "amount": 5, "currency": "USD"}
    assert (
        client.post(
            "/v1/deposits", json=body, headers={**operator, "Idempotency-Key": key}
        ).status_code
        == 202
    )
    # Ageing a key is not something the app does: the owner role plays the clock.
    with owner_session_factory() as session, session.begin():
        record = session.scalars(select(IdempotencyKey).where(IdempotencyKey.key == key)).one()
        record.created_at = datetime.now(UTC) - timedelta(hours=25)
    with session_factory() as session, session.begin():
        assert purge_idempotency_keys(session=session, retention_seconds=24 * 3600) >= 1
        assert (
            session.scalars(select(IdempotencyKey).where(IdempotencyKey.key == key)).first() is None
        )
