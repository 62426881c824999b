"""The OpenAPI document, corrected to say what the API really answers on errors.

FastAPI documents its default 422 body (`HTTPValidationError`, JSON); Settle answers
every error as RFC 9457 `application/problem+json`. This rewrites every 4xx/5xx
response of every operation to reference the `Problem` schema, generated from the
same pydantic model that renders the responses (gateway/errors.py), and documents
the errors every operation of a kind can answer: 422 for unknown query parameters,
400 for a malformed cursor. So generated clients and schema-checking tools
(schemathesis in CI) see the truth.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.constants import REF_TEMPLATE
from fastapi.openapi.utils import get_openapi

from gateway.errors import PROBLEM_JSON, Problem

_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": REF_TEMPLATE.format(model="Problem")}}}
_FASTAPI_422 = "Validation Error"


def problem_schemas() -> dict[str, Any]:
    """`Problem` and the models it uses, as OpenAPI components."""
    schema = Problem.model_json_schema(ref_template=REF_TEMPLATE, mode="serialization")
    return {**schema.pop("$defs", {}), "Problem": schema}


def _document_errors(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    query = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
    # Every operation refuses unknown query parameters (gateway/query_params.py).
    responses.setdefault("422", {"description": _FASTAPI_422})
    if "cursor" in query:
        responses.setdefault("400", {"description": "Malformed cursor (`invalid_cursor`)"})
    for status, response in responses.items():
        if status[:1] in ("4", "5"):
            response["content"] = _PROBLEM_CONTENT
            if status == "422" and response.get("description") == _FASTAPI_422:
                response["description"] = "Validation failed (problem+json)"


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                _document_errors(operation)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components.update(problem_schemas())
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
