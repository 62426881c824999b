"""The OpenAPI document, corrected to say what the API really answers on errors.

FastAPI documents its default 422 body (`HTTPValidationError`, JSON); Settle answers
every error as RFC 9457 `application/problem+json`. This rewrites every 4xx/5xx
response of every operation to reference one `Problem` schema, so generated clients
and schema-checking tools (schemathesis in CI) see the truth.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.errors import PROBLEM_JSON

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details. `code` is stable and machine-readable.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "422 only. Validation errors (loc, msg, type) and refused batch "
            "items (index, code, detail; a validation error in a batch item has both).",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                    "index": {"type": "integer", "description": "0-based item of a batch"},
                    "code": {"type": "string"},
                    "detail": {"type": "string"},
                },
            },
        },
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


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
                for status, response in operation.get("responses", {}).items():
                    if status[:1] in ("4", "5"):
                        response["content"] = _PROBLEM_CONTENT
                        if status == "422":
                            response["description"] = "Validation failed (problem+json)"
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components["Problem"] = PROBLEM_SCHEMA
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
