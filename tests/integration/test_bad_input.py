"""Bad money requests get the documented 4xx as problem+json, and change nothing."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from domain.models import IdempotencyKey, Transfer
from tests.factories import idem, open_account, operator_headers, post_deposit, register_and_login


@pytest.fixture(scope="module")
def world(client, session_factory):
    alice = register_and_login(client)
    mallory = register_and_login(client)
    a = open_account(client, alice)
    b = open_account(client, register_and_login(client))
    eur = open_account(client, alice, currency="EUR")
    stranger = open_account(client, mallory)
    operator = operator_headers(client, session_factory)
    post_deposit(client, operator, a["id"], 10_000)
    return {
        "alice": alice,
        "mallory": mallory,
        "a": a,
        "b": b,
        "eur": eur,
        "stranger": stranger,
        "operator": operator,
    }


def _counts(session_factory):
    with session_factory() as session:
        return (
            session.scalar(select(func.count()).select_from(Transfer)),
            session.scalar(select(func.count()).select_from(IdempotencyKey)),
        )


def _transfer_body(world, **overrides):
    body = {
        "source_account_id": world["a"]["id"],
        "destination_account_number": world["b"]["number"],
        "amount": 100,
        "currency": "USD",
    }
    body.update(overrides)
    return body


BAD_TRANSFERS = [
    pytest.param({"amount": 10.5}, 422, "validation_error", id="float"),
    pytest.param({"amount": 100.0}, 422, "validation_error", id="integral-float"),
    pytest.param({"amount": "100"}, 422, "validation_error", id="string"),
    pytest.param({"amount": True}, 422, "validation_error", id="boolean"),
    pytest.param({"amount": 0}, 422, "validation_error", id="zero"),
    pytest.param({"amount": -5}, 422, "validation_error", id="negative"),
    pytest.param({"amount": 10**30}, 422, "amount_over_limit", id="huge"),
    pytest.param({"amount": 100_000_001}, 422, "amount_over_limit", id="over-maximum"),
    pytest.param({"amount": None}, 422, "validation_error", id="null"),
    pytest.param({"currency": "XXX"}, 422, "unsupported_currency", id="unknown-currency"),
    pytest.param({"currency": "usd"}, 422, "validation_error", id="lowercase-currency"),
    pytest.param({"currency": "EUR"}, 422, "currency_mismatch", id="currency-mismatch"),
    pytest.param({"balance": 1}, 422, "validation_error", id="unknown-field-balance"),
    pytest.param({"status": "succeeded"}, 422, "validation_error", id="unknown-field-status"),
    pytest.param(
        {"destination_account_number": "000000000000"},
        422,
        "destination_not_found",
        id="unknown-destination",
    ),
    pytest.param({"source_account_id": "not-a-uuid"}, 422, "validation_error", id="bad-uuid"),
    pytest.param({"source_account_id": str(uuid.uuid4())}, 404, "not_found", id="missing-source"),
]


@pytest.mark.parametrize(("override", "status", "code"), BAD_TRANSFERS)
def test_bad_transfer_is_rejected_and_changes_nothing(
    client, session_factory, world, override, status, code
):
    before = _counts(session_factory)
    response = client.post(
        "/v1/transfers",
        json=_transfer_body(world, **override),
        headers={**world["alice"], **idem()},
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code
    assert set(problem) >= {"type", "title", "status", "detail", "code"}
    assert "Traceback" not in response.text
    assert _counts(session_factory) == before


def test_missing_idempotency_key_is_400_and_changes_nothing(client, session_factory, world):
    before = _counts(session_factory)
    response = client.post("/v1/transfers", json=_transfer_body(world), headers=world["alice"])
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_missing"
    too_long = client.post(
        "/v1/transfers",
        json=_transfer_body(world),
        headers={**world["alice"], "Idempotency-Key": "k" * 256},
    )
    assert too_long.status_code == 400
    assert _counts(session_factory) == before


def test_same_account_transfer_is_rejected(client, session_factory, world):
    before = _counts(session_factory)
    body = _transfer_body(world, destination_account_number=world["a"]["number"])
    response = client.post("/v1/transfers", json=body, headers={**world["alice"], **idem()})
    assert response.status_code == 422 and response.json()["code"] == "same_account"
    assert _counts(session_factory) == before


def test_someone_elses_account_is_404_everywhere(client, session_factory, world):
    before = _counts(session_factory)
    mallory, a = world["mallory"], world["a"]
    body = _transfer_body(world)  # Mallory tries to move money out of Alice's account
    assert client.post("/v1/transfers", json=body, headers={**mallory, **idem()}).status_code == 404
    withdrawal = {"account_id": a["id"], "amount": 1, "currency": "USD"}
    assert (
        client.post("/v1/withdrawals", json=withdrawal, headers={**mallory, **idem()}).status_code
        == 404
    )
    assert client.get(f"/v1/accounts/{a['id']}", headers=mallory).status_code == 404
    assert client.get(f"/v1/accounts/{a['id']}/entries", headers=mallory).status_code == 404
    listed = client.get("/v1/transfers", params={"account_id": a["id"]}, headers=mallory)
    assert listed.status_code == 200 and listed.json()["data"] == []
    with session_factory() as session:
        alice_transfer = session.scalars(
            select(Transfer.id).where(Transfer.destination_account_id == uuid.UUID(a["id"]))
        ).first()
    assert client.get(f"/v1/transfers/{alice_transfer}", headers=mallory).status_code == 404
    assert _counts(session_factory) == before


def test_customers_cannot_deposit(client, session_factory, world):
    before = _counts(session_factory)
    response = client.post(
        "/v1/deposits",
        json={"account_id": world["a"]["id"], "amount": 1, "currency": "USD"},
        headers={**world["alice"], **idem()},
    )
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert _counts(session_factory) == before


def test_unauthenticated_and_forged_tokens_are_401(client, world):
    body = _transfer_body(world)
    assert client.post("/v1/transfers", json=body, headers=idem()).status_code == 401
    forged = {"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", **idem()}
    response = client.post("/v1/transfers", json=body, headers=forged)
    assert response.status_code == 401 and response.json()["code"] == "invalid_token"


def test_malformed_json_and_unknown_routes_are_problems(client, world):
    response = client.post(
        "/v1/transfers",
        content=b"{not json",
        headers={**world["alice"], **idem(), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    missing = client.get("/v1/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong_method = client.delete("/v1/transfers")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"


def test_account_creation_rejects_unknown_fields_and_currencies(client, world):
    smuggled = client.post(
        "/v1/accounts", json={"currency": "USD", "balance": 10**6}, headers=world["alice"]
    )
    assert smuggled.status_code == 422
    unknown = client.post("/v1/accounts", json={"currency": "ZZZ"}, headers=world["alice"])
    assert unknown.status_code == 422 and unknown.json()["code"] == "unsupported_currency"
