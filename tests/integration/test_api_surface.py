"""One API surface: one problem model behind every error, the document that describes it,
and the same strictness for query parameters as for bodies."""

from __future__ import annotations

from typing import Any

from gateway.errors import PROBLEM_JSON, Problem
from gateway.openapi import problem_schemas
from tests.factories import (
    idem,
    open_account,
    operator_headers,
    post_deposit,
    register_and_login,
    wait_for_events,
)


def _is_exactly_a_problem(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    body: dict[str, Any] = response.json()
    # Nothing beyond the model, nothing the model would not render.
    assert Problem.model_validate(body).model_dump(mode="json", exclude_none=True) == body
    assert body["type"] == f"urn:settle:problem:{body['code'].replace('_', '-')}"
    assert body["status"] == response.status_code
    return body


def test_every_kind_of_error_is_rendered_from_the_problem_model(client):
    alice = register_and_login(client)
    account = open_account(client, alice)
    not_found = client.get(f"/v1/accounts/{'0' * 8}-0000-4000-8000-{'0' * 12}", headers=alice)
    assert _is_exactly_a_problem(not_found)["code"] == "not_found"
    unauthenticated = client.get("/v1/accounts")
    assert _is_exactly_a_problem(unauthenticated)["code"] == "not_authenticated"
    invalid = client.post("/v1/accounts", json={"currency": "USD", "balance": 5}, headers=alice)
    body = _is_exactly_a_problem(invalid)
    assert body["code"] == "validation_error"
    assert body["errors"] == [
        {
            "loc": ["body", "balance"],
            "msg": "Extra inputs are not permitted",
            "type": "extra_forbidden",
        }
    ]
    cursor = client.get("/v1/transfers", params={"cursor": "nope"}, headers=alice)
    assert _is_exactly_a_problem(cursor)["code"] == "invalid_cursor"
    item = {
        "source_account_id": account["id"],
        "destination_account_number": "1" * 12,
        "amount": 1,
        "currency": "USD",
    }
    batch = client.post(
        "/v1/transfer-batches",
        json={"transfers": [item, {**item, "amount": 0}]},
        headers={**alice, **idem()},
    )
    body = _is_exactly_a_problem(batch)
    assert [e["index"] for e in body["errors"]] == [1]
    assert set(body["errors"][0]) == {"loc", "msg", "type", "index", "code", "detail"}
    method = client.put("/v1/accounts", headers=alice)
    assert _is_exactly_a_problem(method)["code"] == "method_not_allowed"


def test_the_openapi_problem_is_generated_from_the_same_model(client):
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    for name, schema in problem_schemas().items():
        assert schemas[name] == schema
    assert "HTTPValidationError" not in schemas
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    errors = [
        response
        for path in document["paths"].values()
        for operation in path.values()
        for status, response in operation["responses"].items()
        if status[:1] in ("4", "5")
    ]
    assert errors and all(r["content"] == {PROBLEM_JSON: {"schema": problem_ref}} for r in errors)
    listing = document["paths"]["/v1/transfers"]["get"]["responses"]
    assert "400" in listing  # a malformed cursor


def _unknown(response: Any, *names: str) -> None:
    body = _is_exactly_a_problem(response)
    assert response.status_code == 422 and body["code"] == "validation_error"
    assert body["errors"] == [
        {"loc": ["query", name], "msg": "Unknown query parameter", "type": "extra_forbidden"}
        for name in names
    ]


def test_unknown_query_parameters_are_refused_on_every_kind_of_route(
    client, session_factory, drain_pending
):
    operator = operator_headers(client, session_factory)
    alice = register_and_login(client)
    account = open_account(client, alice)
    deposit = post_deposit(client, operator, account["id"], 500)
    drain_pending()

    _unknown(client.get("/v1/accounts", params={"limt": 5}, headers=alice), "limt")
    _unknown(
        client.get("/v1/transfers", params={"status": "failed", "staus": "x"}, headers=alice),
        "staus",
    )
    _unknown(
        client.get("/v1/events", params={"afterr": "1", "x": "2"}, headers=alice), "afterr", "x"
    )
    _unknown(client.get(f"/v1/transfers/{deposit['id']}?wait=0&wiat=5", headers=alice), "wiat")
    _unknown(client.get("/v1/me", params={"verbose": 1}, headers=alice), "verbose")
    _unknown(client.get("/healthz", params={"x": 1}), "x")
    # Before authentication, too: the request is malformed whoever sends it.
    _unknown(client.get("/v1/accounts", params={"x": 1}), "x")
    # A money request with an unknown parameter accepts nothing.
    body = {"account_id": account["id"], "amount": 1, "currency": "USD"}
    refused = client.post(
        "/v1/withdrawals", params={"dry_run": "true"}, json=body, headers={**alice, **idem()}
    )
    _unknown(refused, "dry_run")
    listed = client.get("/v1/transfers", params={"account_id": account["id"]}, headers=alice)
    assert [t["id"] for t in listed.json()["data"]] == [deposit["id"]]


def test_declared_query_parameters_and_the_after_alias_still_work(
    client, session_factory, drain_pending
):
    operator = operator_headers(client, session_factory)
    alice = register_and_login(client)
    account = open_account(client, alice)
    deposit = post_deposit(client, operator, account["id"], 500)
    drain_pending()
    wait_for_events(client, alice, 1)
    ok = [
        ("/v1/accounts", {"limit": 1}),
        ("/v1/transfers", {"account_id": account["id"], "status": "succeeded", "limit": 5}),
        (f"/v1/transfers/{deposit['id']}", {"wait": 0}),
        (f"/v1/accounts/{account['id']}/entries", {"limit": 5, "cursor": ""}),
        ("/v1/events", {"limit": 5}),
    ]
    for path, params in ok:
        response = client.get(path, params=params, headers=alice)
        assert response.status_code == 200, (path, response.text)
    first = client.get("/v1/events", params={"limit": 1}, headers=alice).json()
    for name in ("cursor", "after"):
        response = client.get("/v1/events", params={name: first["next_cursor"]}, headers=alice)
        assert response.status_code == 200, response.text
    audit = client.get("/v1/admin/audit-events", params={"event_type": "x.y"}, headers=operator)
    assert audit.status_code == 200, audit.text


def test_the_openapi_document_says_every_operation_may_answer_422(client):
    document = client.get("/openapi.json").json()
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert all("422" in op["responses"] for op in operations)


def test_the_openapi_document_publishes_every_webhook_with_its_payload_schema(client):
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    models = {
        "transfer.succeeded": "TransferEvent",
        "transfer.failed": "TransferEvent",
        "transfer.canceled": "TransferEvent",
        "hold.held": "HoldEvent",
        "hold.captured": "HoldEvent",
        "hold.voided": "HoldEvent",
        "hold.expired": "HoldEvent",
        "balance.below": "BalanceEvent",
        "balance.above": "BalanceEvent",
        "batch.completed": "BatchEvent",
        "ping": "PingEvent",
    }
    assert set(document["webhooks"]) == set(models)
    for event_type, model in models.items():
        operation = document["webhooks"][event_type]["post"]
        body = operation["requestBody"]
        ref = {"$ref": f"#/components/schemas/{model}"}
        assert body["required"] and body["content"]["application/json"]["schema"] == ref
        type_schema = schemas[model]["properties"]["type"]
        assert event_type in type_schema.get("enum", [type_schema.get("const")])
        assert set(schemas[model]["required"]) == {"id", "type", "created_at", "data"}
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        assert "v1,<base64 of HMAC-SHA256" in operation["description"]
        assert set(operation["responses"]) == {"200", "410"}
    # The very schemas /v1/events pages through: one resource, pushed or polled, its
    # shape chosen by `type` (ping is webhook-only).
    page = schemas["Page_EventResource_"]
    assert page["properties"]["data"]["items"] == {"$ref": "#/components/schemas/EventResource"}
    mapping = schemas["EventResource"]["discriminator"]["mapping"]
    assert mapping == {t: f"#/components/schemas/{m}" for t, m in models.items() if t != "ping"}
    assert set(schemas["EventType"]["enum"]) == set(models) - {"ping"}
    balance = schemas["BalanceEventData"]["properties"]
    assert {"alert_id", "threshold", "balance", "transfer_id", "sequence"} <= set(balance)


def _timestamps(value: Any) -> list[str]:
    """Every non-null `*_at` value anywhere in a JSON document."""
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k.endswith("_at") and isinstance(v, str)]
        return found + [t for v in value.values() for t in _timestamps(v)]
    if isinstance(value, list):
        return [t for v in value for t in _timestamps(v)]
    return []


def test_a_replay_a_get_and_an_event_serialise_a_transfer_identically(
    client, session_factory, drain_pending
):
    operator = operator_headers(client, session_factory)
    alice = register_and_login(client)
    source, destination = open_account(client, alice), open_account(client, alice)
    post_deposit(client, operator, source["id"], 10_000)
    drain_pending()
    key = idem()
    body = {
        "source_account_id": source["id"],
        "destination_account_number": destination["number"],
        "amount": 1_234,
        "currency": "USD",
        "description": "rent",
    }
    accepted = client.post("/v1/transfers", json=body, headers={**alice, **key})
    assert accepted.status_code == 202, accepted.text
    created = accepted.json()
    assert created["status"] == "pending" and created["completed_at"] is None

    replay = client.post("/v1/transfers", json=body, headers={**alice, **key})
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.status_code == 202 and replay.json() == created
    pending = client.get(f"/v1/transfers/{created['id']}", headers=alice).json()
    assert pending == created

    drain_pending()
    settled = client.get(f"/v1/transfers/{created['id']}", headers=alice).json()
    assert settled["status"] == "succeeded" and settled["completed_at"] is not None
    unchanged = {k: v for k, v in settled.items() if k not in ("status", "completed_at")}
    assert unchanged == {k: v for k, v in created.items() if k not in ("status", "completed_at")}
    # A replay after the fact still answers what the 202 said.
    assert client.post("/v1/transfers", json=body, headers={**alice, **key}).json() == created

    events = wait_for_events(client, alice, 2)  # the deposit's and the transfer's
    [event] = [e for e in events if e["data"]["transfer"]["id"] == created["id"]]
    assert event["type"] == "transfer.succeeded"
    assert event["data"]["transfer"] == settled  # the same JSON, field for field
    entries = client.get(f"/v1/accounts/{source['id']}/entries", headers=alice).json()["data"]
    [debit] = [e for e in entries if e["transfer_id"] == created["id"]]
    assert debit in event["data"]["entries"]  # an entry, too, is one resource everywhere

    everything = [created, replay.json(), pending, settled, event, entries]
    stamps = _timestamps(everything)
    assert len(stamps) >= 9
    for stamp in stamps:
        assert stamp.endswith("Z") and "+" not in stamp, stamp
