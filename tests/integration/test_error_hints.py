"""Errors that say what to do: the common mistakes of a first hour with the API get an
answer naming the fix, and change nothing (issue 13, "Errors that say what to do")."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from domain.models import Transfer, WebhookEndpoint
from gateway.tokens import issue_access_token
from tests.factories import (
    idem,
    make_user,
    open_account,
    operator_headers,
    post_deposit,
    register_and_login,
)


@pytest.fixture(scope="module")
def world(client: TestClient, session_factory: Any) -> dict[str, Any]:
    alice = register_and_login(client)
    a = open_account(client, alice)
    b = open_account(client, register_and_login(client))
    post_deposit(client, operator_headers(client, session_factory), a["id"], 10_000)
    return {"alice": alice, "a": a, "b": b}


def _transfers(session_factory: Any) -> int:
    with session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(Transfer)) or 0)


def _body(world: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {
        "source_account_id": world["a"]["id"],
        "destination_account_number": world["b"]["number"],
        "amount": 1250,
        "currency": "USD",
        **overrides,
    }


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


@pytest.mark.parametrize("amount", [12.50, "12.50", 12.0], ids=["float", "string", "whole-float"])
def test_a_decimal_amount_is_told_about_minor_units(client, session_factory, world, amount):
    before = _transfers(session_factory)
    response = client.post(
        "/v1/transfers", json=_body(world, amount=amount), headers={**world["alice"], **idem()}
    )
    body = _problem(response, 422, "validation_error")
    assert "minor units" in body["detail"] and "1250" in body["detail"]
    [error] = body["errors"]
    assert error["loc"] == ["body", "amount"] and "minor units" in error["msg"]
    assert _transfers(session_factory) == before


def test_a_decimal_amount_in_a_batch_item_is_told_about_minor_units(client, world):
    response = client.post(
        "/v1/transfer-batches",
        json={"transfers": [_body(world), _body(world, amount=9.99)]},
        headers={**world["alice"], **idem()},
    )
    body = _problem(response, 422, "validation_error")
    [error] = body["errors"]
    assert error["index"] == 1 and "minor units" in error["detail"]


def test_other_validation_errors_get_no_minor_units_hint(client, world):
    response = client.post(
        "/v1/transfers", json=_body(world, amount=0), headers={**world["alice"], **idem()}
    )
    body = _problem(response, 422, "validation_error")
    assert "minor units" not in body["detail"]
    assert "errors" in body["detail"]  # points at the list naming each field


def test_a_form_encoded_body_is_told_to_send_json(client, session_factory, world):
    """What `curl -d '{...}'` without a content-type header sends."""
    import json

    before = _transfers(session_factory)

    response = client.post(
        "/v1/transfers",
        content=json.dumps(_body(world)).encode(),
        headers={
            **world["alice"],
            **idem(),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    body = _problem(response, 415, "unsupported_media_type")
    assert "application/x-www-form-urlencoded" in body["detail"]
    assert "Content-Type: application/json" in body["detail"]
    assert _transfers(session_factory) == before


def test_a_text_body_is_told_to_send_json(client, world):
    response = client.post(
        "/v1/accounts",
        content=b'{"currency": "USD"}',
        headers={**world["alice"], "Content-Type": "text/plain"},
    )
    body = _problem(response, 415, "unsupported_media_type")
    assert "text/plain" in body["detail"]


def test_a_body_without_content_type_is_told_to_declare_json(client, world):
    import json

    response = client.post(
        "/v1/accounts",
        content=json.dumps({"currency": "USD"}).encode(),
        headers=world["alice"],
    )
    body = _problem(response, 415, "unsupported_media_type")
    assert "no Content-Type header" in body["detail"]
    assert "Content-Type: application/json" in body["detail"]


def test_a_missing_body_and_broken_json_say_what_to_send(client, world):
    missing = client.post("/v1/transfers", headers={**world["alice"], **idem()})
    body = _problem(missing, 422, "validation_error")
    assert "needs a JSON body" in body["detail"]
    broken = client.post(
        "/v1/transfers",
        content=b"{not json",
        headers={**world["alice"], **idem(), "Content-Type": "application/json"},
    )
    body = _problem(broken, 422, "validation_error")
    assert "not valid JSON" in body["detail"]


def test_an_expired_token_points_at_the_refresh_endpoint(client, settings, world):
    user = make_user(client.app.state.session_factory)
    short = settings.model_copy(update={"access_token_ttl_seconds": 1})
    token = issue_access_token(short, user_id=user.id, role="customer")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/accounts", headers=headers).status_code == 200
    time.sleep(2.1)
    expired = client.get("/v1/accounts", headers=headers)
    body = _problem(expired, 401, "token_expired")
    assert "/v1/auth/refresh" in body["detail"]
    assert expired.headers["www-authenticate"].startswith("Bearer")
    # The money routes read the token without the database: the same answer there.
    money = client.post("/v1/transfers", json=_body(world), headers={**headers, **idem()})
    _problem(money, 401, "token_expired")


def test_a_forged_token_is_still_just_invalid(client, settings):
    user_id = uuid.uuid4()
    token = issue_access_token(settings, user_id=user_id, role="customer")
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    response = client.get("/v1/accounts", headers={"Authorization": f"Bearer {forged}"})
    body = _problem(response, 401, "invalid_token")
    assert "refresh" not in body["detail"]


def _mistyped(number: str) -> str:
    """The same number with its check digit changed: what one wrong keystroke gives."""
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def test_a_mistyped_account_number_differs_from_an_unknown_one(client, session_factory, world):
    before = _transfers(session_factory)
    typo = client.post(
        "/v1/transfers",
        json=_body(world, destination_account_number=_mistyped(world["b"]["number"])),
        headers={**world["alice"], **idem()},
    )
    typo_body = _problem(typo, 422, "invalid_account_number")
    assert "check digit" in typo_body["detail"]
    wrong_length = client.post(
        "/v1/transfers",
        json=_body(world, destination_account_number="123456789"),
        headers={**world["alice"], **idem()},
    )
    _problem(wrong_length, 422, "invalid_account_number")
    # Well-formed (its check digit matches) but nobody's: a different answer.
    unknown = client.post(
        "/v1/transfers",
        json=_body(world, destination_account_number="000000000000"),
        headers={**world["alice"], **idem()},
    )
    unknown_body = _problem(unknown, 422, "destination_not_found")
    assert unknown_body["detail"] != typo_body["detail"]
    assert _transfers(session_factory) == before


def test_a_mistyped_number_in_a_batch_is_named_by_index(client, session_factory, world):
    before = _transfers(session_factory)
    response = client.post(
        "/v1/transfer-batches",
        json={
            "transfers": [
                _body(world),
                _body(world, destination_account_number=_mistyped(world["b"]["number"])),
            ]
        },
        headers={**world["alice"], **idem()},
    )
    body = _problem(response, 422, "batch_rejected")
    assert [(e["index"], e["code"]) for e in body["errors"]] == [(1, "invalid_account_number")]
    assert _transfers(session_factory) == before


@pytest.fixture(scope="module")
def development_client(settings: Any) -> Iterator[TestClient]:
    from gateway.app import create_app

    development = settings.model_copy(
        update={
            "environment": "development",
            "redis_prefix": f"{settings.redis_prefix}inproc-dev:",
        }
    )
    with TestClient(create_app(development), raise_server_exceptions=False) as dev_client:
        yield dev_client


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/hook", "http://127.0.0.1:9999/hook", "http://10.1.2.3/hook"],
    ids=["loopback", "loopback-odd-port", "private"],
)
def test_a_private_webhook_url_in_development_names_the_switch(
    development_client, session_factory, url
):
    headers = register_and_login(development_client)
    response = development_client.post(
        "/v1/webhook-endpoints",
        json={"url": url, "events": ["transfer.succeeded"]},
        headers=headers,
    )
    body = _problem(response, 422, "webhook_url_not_allowed")
    assert "SETTLE_WEBHOOK_ALLOW_PRIVATE=true" in body["detail"]
    assert "never set it in production" in body["detail"]
    with session_factory() as session:
        assert not session.scalar(
            select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.url == url)
        )


def test_outside_development_the_refusal_does_not_name_the_switch(client):
    headers = register_and_login(client)
    response = client.post(
        "/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9999/hook", "events": ["transfer.succeeded"]},
        headers=headers,
    )
    body = _problem(response, 422, "webhook_url_not_allowed")
    assert "SETTLE_WEBHOOK_ALLOW_PRIVATE" not in body["detail"]
