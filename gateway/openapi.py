"""The OpenAPI document, corrected to say what the API really answers on errors.

FastAPI documents its default 422 body (`HTTPValidationError`, JSON); Settle answers
every error as RFC 9457 `application/problem+json`. This rewrites every 4xx/5xx
response of every operation to reference the `Problem` schema, generated from the
same pydantic model that renders the responses (gateway/errors.py), and documents
the errors every operation of a kind can answer: 422 for unknown query parameters,
400 for a malformed cursor. So generated clients and schema-checking tools
(schemathesis in CI) see the truth.

It also publishes what Settle sends: the `webhooks` section has one operation per
event type, whose body is that type's model from domain/resources.py (`EVENT_MODELS`,
the same models /v1/events returns), and one for the test `ping`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header, Response
from fastapi.openapi.constants import REF_TEMPLATE
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from domain.resources import EVENT_MODELS, PingEvent
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
    if "requestBody" in operation:
        # gateway/errors.py: a body not declared as JSON is refused, saying which header.
        responses.setdefault(
            "415",
            {
                "description": "Body not sent as `Content-Type: application/json` "
                "(`unsupported_media_type`)"
            },
        )
    for status, response in responses.items():
        if status[:1] in ("4", "5"):
            response["content"] = _PROBLEM_CONTENT
            if status == "422" and response.get("description") == _FASTAPI_422:
                response["description"] = "Validation failed (problem+json)"


WEBHOOK_DESCRIPTION = """
Settle POSTs this to every active endpoint of yours subscribed to the event type,
as JSON, signed per the [Standard Webhooks](https://www.standardwebhooks.com/)
specification:

* `webhook-id`: the event's `id` (`evt_…`), the same on every retry: deduplicate on it.
* `webhook-timestamp`: Unix seconds when this attempt was signed: reject stale ones.
* `webhook-signature`: `v1,<base64 of HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>`,
  where the key is the base64-decoded part of the endpoint secret after `whsec_`, and
  `<body>` the raw request body. While a rotated secret is still in its grace period,
  two signatures are sent, space-separated; accept the request if either verifies.

Answer any 2xx to acknowledge. Anything else, a timeout or a refused connection is
retried with growing delays; `410 Gone` disables the endpoint. Delivery is at least
once, and redirects are not followed.
"""

WebhookId = Annotated[str, Header(alias="webhook-id", description="The event id; stable")]
WebhookTimestamp = Annotated[
    int, Header(alias="webhook-timestamp", description="Unix seconds of this attempt")
]
WebhookSignature = Annotated[
    str,
    Header(alias="webhook-signature", description="`v1,<base64 HMAC-SHA256>`, space-separated"),
]


def _declare_webhook(app: FastAPI, name: str, model: type[BaseModel], about: str) -> None:
    async def receive(
        event: BaseModel,
        webhook_id: WebhookId,
        webhook_timestamp: WebhookTimestamp,
        webhook_signature: WebhookSignature,
    ) -> Response:
        # Never called: app.webhooks only documents what the client's receiver gets.
        return Response(status_code=204)

    # The signature is what FastAPI documents: the body is this event type's model.
    receive.__annotations__["event"] = model
    app.webhooks.post(
        name,
        summary=f"`{name}`, sent to your webhook endpoints",
        description=about.strip() + "\n" + WEBHOOK_DESCRIPTION,
        operation_id=f"webhook_{name.replace('.', '_')}",
        response_class=Response,
        responses={
            200: {"description": "Any 2xx acknowledges the event"},
            410: {"description": "Gone: Settle disables the endpoint"},
        },
    )(receive)


def install(app: FastAPI) -> None:
    for event_type, model in EVENT_MODELS.items():
        _declare_webhook(app, event_type.value, model, model.__doc__ or "")
    _declare_webhook(app, "ping", PingEvent, PingEvent.__doc__ or "")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            webhooks=app.webhooks.routes,
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                _document_errors(operation)
        for webhook in schema.get("webhooks", {}).values():
            for operation in webhook.values():
                # The receiver's answer, not ours: FastAPI's automatic 422 says nothing.
                operation["responses"].pop("422", None)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        components.update(problem_schemas())
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
