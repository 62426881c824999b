"""Idempotency-Key at this stage: a replay returns the same transfer and never creates another."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from domain.models import Transfer
from tests.factories import open_account, operator_headers, register_and_login


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


def test_concurrent_identical_requests_create_one_transfer(client, session_factory):
    operator = operator_headers(client, session_factory)
    account = open_account(client, register_and_login(client))
    body = {"account_id": account["id"], "amount": 700, "currency": "USD"}
    headers = {**operator, "Idempotency-Key": "burst"}
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(
            pool.map(lambda _: client.post("/v1/deposits", json=body, headers=headers), range(30))
        )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert _count_for(session_factory, account["id"]) == 1
