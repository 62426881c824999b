"""RFC 9457 problem+json for every error, and the one place domain errors become HTTP statuses.

`Problem` is the one definition of the error body: every error response is built
from it, and the OpenAPI document's `Problem` component is generated from it.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy.exc import DisconnectionError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain import errors

logger = logging.getLogger("settle.gateway")

PROBLEM_JSON = "application/problem+json"

STATUS_FOR: dict[type[errors.DomainError], int] = {
    errors.InvalidRequest: 422,
    errors.IdempotencyKeyReused: 422,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PermissionDenied: 403,
    errors.AuthenticationFailed: 401,
    errors.TooManyAttempts: 429,
}

_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def _absent_not_null(schema: dict[str, Any]) -> None:
    # Optional members are left out of the body (exclude_none), never sent as null:
    # with SkipJsonSchema[None] on their types, no `default: null` either.
    for member in schema.get("properties", {}).values():
        member.pop("default", None)


class ProblemItem(BaseModel):
    """One entry of `errors`: a validation error (`loc`, `msg`, `type`), a refused batch
    item (`index`, `code`, `detail`), or both, for a validation error in a batch item."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null)

    loc: list[str] | SkipJsonSchema[None] = Field(
        default=None, description="Where: `body`, `query`, `path` or `header`, then the field"
    )
    msg: str | SkipJsonSchema[None] = None
    type: str | SkipJsonSchema[None] = Field(default=None, description="e.g. `extra_forbidden`")
    index: int | SkipJsonSchema[None] = Field(default=None, description="0-based item of a batch")
    code: str | SkipJsonSchema[None] = None
    detail: str | SkipJsonSchema[None] = None


class Problem(BaseModel):
    """RFC 9457 problem details. `code` is stable and machine-readable."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null)

    type: str = Field(description="A URN naming the kind of problem: `urn:settle:problem:<code>`")
    title: str
    status: int
    detail: str
    code: str
    errors: list[ProblemItem] | SkipJsonSchema[None] = Field(
        default=None,
        description="422 only. Validation errors (loc, msg, type) and refused batch "
        "items (index, code, detail; a validation error in a batch item has both).",
    )
    checks: dict[str, str] | SkipJsonSchema[None] = Field(
        default=None, description="503 from /readyz only: each dependency, `ok` or not"
    )


def problem_responses(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=` for the errors it documents: each a `Problem`."""
    return {
        status: {"description": text, "model": Problem} for status, text in descriptions.items()
    }


class ApiError(Exception):
    """An HTTP-level error raised by the gateway itself (missing header, bad token...)."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    errors: Sequence[ProblemItem] | None = None,
    checks: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        # A URN, not a URL: stable, unique, and not pointing at a host we may not own.
        type=f"urn:settle:problem:{code.replace('_', '-')}",
        title=title or _TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        code=code,
        errors=list(errors) if errors is not None else None,
        checks=checks,
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


# Fields holding money (integer minor units), and the pydantic error types a decimal
# like 12.50 or "12.50" produces on them: those get a hint about minor units.
MONEY_FIELDS = frozenset({"amount", "overdraft_limit", "daily_outgoing_limit"})
_NOT_AN_INTEGER = frozenset({"int_type", "int_from_float", "int_parsing"})
MINOR_UNITS_HINT = (
    'amounts are integers in minor units (cents): send 1250 for 12.50, not 12.50 or "12.50"'
)
JSON_CONTENT_TYPE_HINT = (
    "send the body as JSON with the header `Content-Type: application/json` "
    "(curl's -d sends application/x-www-form-urlencoded unless you add "
    "-H 'content-type: application/json')"
)

# PostgreSQL down, restarting, crashed, or the connection lost: transient, so 503 with
# Retry-After rather than 500. Acceptance commits in one statement, so a money request
# that failed this way was either recorded or not at all; a retry with the same
# Idempotency-Key replays it or records it, never twice.
_DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08: connection lost, refused, ...
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, starting up
    asyncpg.exceptions.TooManyConnectionsError,
    OperationalError,  # the same, through SQLAlchemy (psycopg2)
    DisconnectionError,
)
# What connecting to a server that is gone raises (a unix socket removed, a port closed).
_CONNECT_ERRNOS = {errno.ENOENT, errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE}
DATABASE_RETRY_AFTER_SECONDS = 1


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means PostgreSQL cannot be reached right now (retry later)."""
    if isinstance(exc, _DATABASE_UNAVAILABLE):
        return True
    if isinstance(exc, OSError) and exc.errno in _CONNECT_ERRNOS:
        # Only from the database drivers' connect path: any other OSError is a bug.
        tb = exc.__traceback__
        while tb is not None:
            module = tb.tb_frame.f_globals.get("__name__", "")
            if module.startswith(("asyncpg.", "psycopg2", "sqlalchemy.")):
                return True
            tb = tb.tb_next
    return False


def database_unavailable_problem() -> JSONResponse:
    return problem(
        503,
        "database_unavailable",
        "the ledger database cannot be reached right now; retry after the number of "
        "seconds in Retry-After. Retry money requests with the same Idempotency-Key: "
        "the retry replays the request if it was recorded, and records it once if not",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


def _validation_errors(exc: RequestValidationError) -> list[ProblemItem]:
    # Only location, message and type: never echo input back (it may hold a password).
    return [_validation_error(err) for err in exc.errors()]


def _is_money_type_error(item: ProblemItem) -> bool:
    field = item.loc[-1] if item.loc else None
    return field in MONEY_FIELDS and item.type in _NOT_AN_INTEGER


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with the errors, and a `detail` that says what to do about the likeliest cause."""
    items = _validation_errors(exc)
    content_type = request.headers.get("content-type")
    body_missing = any(item.loc == ["body"] and item.type == "missing" for item in items)
    body_refused = any(item.loc and item.loc[0] == "body" for item in items)
    # FastAPI parses a body as JSON only when it is declared as JSON: a form-encoded,
    # text or undeclared body fails as "not an object", which says nothing useful.
    if body_refused and not body_missing and not _is_json(content_type):
        sent = (
            f"the body was sent as {content_type.split(';', 1)[0].strip()}"
            if content_type
            else "the request has no Content-Type header"
        )
        return problem(415, "unsupported_media_type", f"{sent}; {JSON_CONTENT_TYPE_HINT}")
    detail = "the request does not match the schema; `errors` names each field"
    if any(item.type == "json_invalid" for item in items):
        detail = "the body is not valid JSON; " + JSON_CONTENT_TYPE_HINT
    elif body_missing:
        detail = "the request needs a JSON body; " + JSON_CONTENT_TYPE_HINT
    elif any(_is_money_type_error(item) for item in items):
        detail = MINOR_UNITS_HINT
    return problem(422, "validation_error", detail, errors=items)


def _validation_error(err: Any) -> ProblemItem:
    loc = list(err.get("loc", ()))
    item = ProblemItem(
        loc=[str(part) for part in loc], msg=err.get("msg", ""), type=err.get("type", "")
    )
    if _is_money_type_error(item):
        item.msg = f"{item.msg}; {MINOR_UNITS_HINT}"
    # An item of a batch: name it by index, as refusals found later are named.
    if loc[:2] == ["body", "transfers"] and len(loc) > 2 and isinstance(loc[2], int):
        field = ".".join(str(part) for part in loc[3:]) or "item"
        item.index, item.code = loc[2], "validation_error"
        item.detail = f"{field}: {item.msg}"
    return item


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.DomainError)
    async def domain_error(_: Request, exc: errors.DomainError) -> JSONResponse:
        status = next((code for cls, code in STATUS_FOR.items() if isinstance(exc, cls)), 400)
        refused = (
            [ProblemItem.model_validate(item) for item in exc.errors]
            if isinstance(exc, errors.BatchRejected)
            else None
        )
        headers = (
            {"Retry-After": str(exc.retry_after)}
            if isinstance(exc, errors.TooManyAttempts)
            else None
        )
        return problem(
            status, exc.code, exc.detail, title=exc.title, errors=refused, headers=headers
        )

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.code, exc.detail, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_problem(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            exc.status_code, "http_error"
        )
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
        return problem(exc.status_code, code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if database_unavailable(exc):
            logger.warning(
                "database unavailable on %s %s: %s: %s",
                request.method,
                request.url.path,
                type(exc).__name__,
                exc,
            )
            return database_unavailable_problem()
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal_error", "an unexpected error occurred")
