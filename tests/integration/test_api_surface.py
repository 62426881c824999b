"""One API surface: one problem model behind every error and the document that describes it."""

from __future__ import annotations

from typing import Any

from gateway.errors import PROBLEM_JSON, Problem
from gateway.openapi import problem_schemas
from tests.factories import idem, open_account, register_and_login


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
